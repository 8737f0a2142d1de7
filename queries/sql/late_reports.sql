-- Which wards were late with their 2026-10 monthly report, and by how much.
SELECT unit_code, unit_name, first_submitted_at, deadline,
       CAST(first_submitted_at AS DATE) - deadline AS days_late
FROM report_status
WHERE period = '2026-10' AND form = 'ward_monthly' AND status = 'late'
ORDER BY days_late DESC, unit_code
LIMIT 5;
