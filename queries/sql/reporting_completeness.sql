-- How many wards reported population for each month of 2025, against the
-- wards of the hierarchy in force that month (526 before July, 126 after).
WITH expected AS (
    SELECT p.period, COUNT(*) AS expected
    FROM periods p
    JOIN units u ON u.level = 'ward'
        AND (u.valid_from IS NULL OR u.valid_from <= p.end_date)
        AND (u.valid_to IS NULL OR p.end_date < u.valid_to)
    WHERE p.period_type = 'month' AND p.year = 2025
    GROUP BY p.period
), reported AS (
    SELECT period, COUNT(DISTINCT unit_code) AS reported
    FROM reports
    WHERE indicator_code = 'population' AND period LIKE '2025-%'
    GROUP BY period
)
SELECT e.period, COALESCE(r.reported, 0) AS reported, e.expected,
       ROUND(100.0 * COALESCE(r.reported, 0) / e.expected, 1) AS percent
FROM expected e
LEFT JOIN reported r ON r.period = e.period
ORDER BY e.period;
