-- A series comparable across the 2025 reform: births per year in today's
-- ward 00004 (Phường Ba Đình), the old wards that formed it mapped in.
SELECT period, value, reporting_units
FROM rollup_current
WHERE unit_code = '00004' AND indicator_code = 'births' AND period_type = 'year'
ORDER BY period;
