-- Corrections: values submitted more than once, with the superseded value
-- kept in reports_history.
SELECT h.unit_code, h.period, h.indicator_code, COUNT(*) AS versions,
       MIN(h.submitted_at) AS first_submitted, MAX(h.submitted_at) AS last_submitted
FROM reports_history h
GROUP BY h.unit_code, h.period, h.indicator_code
HAVING COUNT(*) > 1
ORDER BY last_submitted DESC, h.unit_code, h.indicator_code
LIMIT 5;
