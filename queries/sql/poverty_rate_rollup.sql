-- The poverty rate per district for 2024 from the rollup table: recomputed
-- as 100 × Σ poor households / Σ households, never a sum or mean of rates.
SELECT unit_code, unit_name, ROUND(value, 4) AS poverty_rate, reporting_units
FROM rollup
WHERE unit_level = 'district' AND period = '2024' AND indicator_code = 'poverty_rate'
ORDER BY value DESC, unit_code
LIMIT 5;
