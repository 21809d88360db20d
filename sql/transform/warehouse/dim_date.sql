-- dim_date: whole calendar years, without gaps, from the year of the first order date to the
-- year of the last one (of the facts and the candidate lines), widened by padding years.
-- Existing days are updated only where a configured attribute changed (holidays, fiscal year).
-- Parameters: padding (years), holidays (date[]), fiscal_start (month 1-12).
-- Returns one row: days inserted or updated.

WITH order_dates AS (
    SELECT transaction_date AS d FROM _wh_items
    UNION ALL
    SELECT to_date(min(date_key)::text, 'YYYYMMDD') FROM warehouse.fact_sales WHERE date_key > 0
    UNION ALL
    SELECT to_date(max(date_key)::text, 'YYYYMMDD') FROM warehouse.fact_sales WHERE date_key > 0
),
bounds AS (
    SELECT make_date(extract(year FROM min(d))::int - %(padding)s, 1, 1)   AS first_day,
           make_date(extract(year FROM max(d))::int + %(padding)s, 12, 31) AS last_day
    FROM order_dates
    HAVING min(d) IS NOT NULL
),
days AS (
    SELECT g::date AS d
    FROM bounds, generate_series(bounds.first_day, bounds.last_day, interval '1 day') AS g
),
changed AS (
    INSERT INTO warehouse.dim_date (
        date_key, full_date, year, quarter, month, month_name, week_of_year, day_of_month,
        day_of_week, day_name, is_weekend, is_holiday, fiscal_year, fiscal_quarter
    )
    SELECT
        to_char(d, 'YYYYMMDD')::integer,
        d,
        extract(year FROM d)::smallint,
        extract(quarter FROM d)::smallint,
        extract(month FROM d)::smallint,
        to_char(d, 'FMMonth'),
        extract(week FROM d)::smallint,          -- ISO 8601 week
        extract(day FROM d)::smallint,
        extract(isodow FROM d)::smallint,        -- 1 = Monday
        to_char(d, 'FMDay'),
        extract(isodow FROM d) >= 6,
        d = ANY (%(holidays)s::date[]),
        -- named by the calendar year the fiscal year ends in
        (extract(year FROM d)
            + CASE WHEN %(fiscal_start)s > 1 AND extract(month FROM d) >= %(fiscal_start)s
                   THEN 1 ELSE 0 END)::smallint,
        (mod(extract(month FROM d)::int - %(fiscal_start)s + 12, 12) / 3 + 1)::smallint
    FROM days
    ON CONFLICT (date_key) DO UPDATE
    SET is_holiday = EXCLUDED.is_holiday,
        fiscal_year = EXCLUDED.fiscal_year,
        fiscal_quarter = EXCLUDED.fiscal_quarter
    WHERE (dim_date.is_holiday, dim_date.fiscal_year, dim_date.fiscal_quarter)
          IS DISTINCT FROM (EXCLUDED.is_holiday, EXCLUDED.fiscal_year, EXCLUDED.fiscal_quarter)
    RETURNING 1
)
SELECT count(*) AS days FROM changed;
