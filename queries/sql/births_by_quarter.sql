-- Births are a flow: a quarter is the sum of its months.
SELECT p.quarter, CAST(SUM(r.value) AS BIGINT) AS births
FROM reports r
JOIN periods p ON p.period = r.period
WHERE r.indicator_code = 'births' AND p.year = 2024
GROUP BY p.quarter
ORDER BY p.quarter;
