-- GROUP BY ROLLUP over the hierarchy: ward, district and city totals of
-- households in 2024-12 in one result (NULL district = the city's total).
SELECT u.province_code, u.district_code, COUNT(*) AS wards, CAST(SUM(r.value) AS BIGINT) AS households
FROM reports r
JOIN periods p ON p.period = r.period
JOIN units u ON u.code = r.unit_code
    AND (u.valid_from IS NULL OR u.valid_from <= p.end_date)
    AND (u.valid_to IS NULL OR p.end_date < u.valid_to)
WHERE r.indicator_code = 'households' AND r.period = '2024-12'
GROUP BY ROLLUP (u.province_code, u.district_code)
ORDER BY u.province_code NULLS FIRST, u.district_code NULLS FIRST
LIMIT 8;
