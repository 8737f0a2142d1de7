-- Completeness and timeliness of the ward monthly report for 2025-06, per
-- district (the last month before the reform), from the schedule: due on
-- the 20th of the following month.
SELECT unit_code, unit_name, expected, received, on_time, late, missing,
       completeness_percent, on_time_percent
FROM completeness
WHERE unit_level = 'district' AND period = '2025-06' AND form = 'ward_monthly'
ORDER BY on_time_percent, unit_code
LIMIT 5;
