-- Births per district in 2024-06, through the hierarchy in force that month
-- (the 30 districts of the version of 2025-01-01).
SELECT u.district_code, d.name AS district, CAST(SUM(r.value) AS BIGINT) AS births
FROM reports r
JOIN periods p ON p.period = r.period
JOIN units u ON u.code = r.unit_code
    AND (u.valid_from IS NULL OR u.valid_from <= p.end_date)
    AND (u.valid_to IS NULL OR p.end_date < u.valid_to)
JOIN units d ON d.code = u.district_code AND d.version = u.version
WHERE r.indicator_code = 'births' AND r.period = '2024-06'
GROUP BY u.district_code, d.name
ORDER BY births DESC
LIMIT 10;
