-- The city's population per month of 2024: the sum of its wards' latest
-- reported values (population is a stock; each month stands on its own).
SELECT r.period, CAST(SUM(r.value) AS BIGINT) AS population, COUNT(*) AS wards_reporting
FROM reports r
WHERE r.indicator_code = 'population' AND r.period BETWEEN '2024-01' AND '2024-12'
GROUP BY r.period
ORDER BY r.period;
