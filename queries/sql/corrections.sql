-- Corrections: values of 2024-06 submitted more than once. `reports` shows
-- the latest; reports_history keeps every version for audit.
SELECT h.unit_code, h.indicator_code,
       COUNT(*) AS versions,
       MIN(h.value) FILTER (WHERE h.submitted_at = first_at) AS first_value,
       MAX(r.value) AS current_value
FROM (SELECT *, MIN(submitted_at) OVER (PARTITION BY unit_code, period, indicator_code) AS first_at
      FROM reports_history WHERE period = '2024-06') h
JOIN reports r ON r.unit_code = h.unit_code AND r.period = h.period AND r.indicator_code = h.indicator_code
GROUP BY h.unit_code, h.indicator_code
HAVING COUNT(*) > 1
ORDER BY h.unit_code, h.indicator_code;
