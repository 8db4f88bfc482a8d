-- tracelake SQLite schema, version 4: span filters are answered per trace (through
-- spans_by_trace), so the indexes on span name and on type and status only cost every insert
-- two more B-tree writes, and could lead the planner to scan every span of a common type.
DROP INDEX spans_by_type_status;
DROP INDEX spans_by_name;
