-- @materialized: table
-- Store dimension: codes normalised the same way as in silver.sales.
SELECT
    {{ clean_code('store_id') }} AS store_id,
    trim(store_name) AS store_name,
    trim(city) AS city,
    lower(trim(region)) AS region,
    opened_on,
    sq_meters
FROM {{ source('stores') }}
QUALIFY row_number() OVER (PARTITION BY {{ clean_code('store_id') }} ORDER BY _ingested_at DESC) = 1
