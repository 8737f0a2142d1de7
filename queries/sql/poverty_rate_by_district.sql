-- A rate never adds up: the poverty rate of a district is
-- 100 × Σ poor households / Σ households of its wards (2024).
SELECT u.district_code,
       ROUND(100.0 * SUM(CASE WHEN r.indicator_code = 'poor_households' THEN r.value END)
                   / SUM(CASE WHEN r.indicator_code = 'households' THEN r.value END), 4) AS poverty_rate
FROM reports r
JOIN units u ON u.code = r.unit_code AND u.valid_from IS NULL
WHERE r.period IN ('2024', '2024-12')
  AND ((r.indicator_code = 'poor_households' AND r.period = '2024')
    OR (r.indicator_code = 'households' AND r.period = '2024-12'))
GROUP BY u.district_code
ORDER BY poverty_rate DESC
LIMIT 5;
