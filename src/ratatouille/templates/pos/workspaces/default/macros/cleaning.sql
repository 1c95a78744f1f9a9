{# Macros are callable from every model of the workspace. #}

{% macro clean_code(column) -%}
upper(trim({{ column }}))
{%- endmacro %}

{% macro parse_pos_timestamp(column) -%}
coalesce(
    try_strptime(trim({{ column }}), '%Y-%m-%d %H:%M:%S'),
    try_strptime(trim({{ column }}), '%d/%m/%Y %H:%M:%S')
)
{%- endmacro %}
