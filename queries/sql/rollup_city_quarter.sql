-- The city's figures for 2024Q3, each by its own rules: population is the
-- last reported month (a stock), births the sum of the months (a flow),
-- health-insurance coverage 100 × Σ participants / Σ population.
SELECT indicator_code, value, reporting_units, expected_units
FROM rollup
WHERE unit_code = '01' AND period = '2024Q3'
  AND indicator_code IN ('population', 'births', 'deaths', 'households', 'household_size', 'health_insurance_coverage')
ORDER BY indicator_code;
