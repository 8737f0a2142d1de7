-- Which wards were late with their 2025-08 monthly report, and by how much.
SELECT unit_code, unit_name, first_submitted_at, deadline,
       CAST(first_submitted_at AS DATE) - deadline AS days_late
FROM report_status
WHERE period = '2025-08' AND form = 'ward_monthly' AND status = 'late'
ORDER BY days_late DESC, unit_code
LIMIT 5;
