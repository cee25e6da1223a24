//! The SQL both backends' pools speak. Queries shared by SQLite and PostgreSQL are
//! written once, with PostgreSQL's `$N` placeholders (SQLite's pool reads them as
//! `?N`, [`numbered`]); each backend runs them with its own driver and reads their
//! rows into the same named types. Where the dialects differ (expanding a JSON array
//! into rows) the difference is spelled out here.

use super::{Backend, Store};

/// Which SQL dialect a pool or transaction speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Store {
    pub(crate) fn dialect(&self) -> Dialect {
        match self.backend() {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// The rows of a JSON array parameter, as `j(value, key)` with `key` its position:
/// SQLite's `json_each`, PostgreSQL's `jsonb_array_elements`. Values are read with
/// `j.value->>N` (an element of a row array) or `j.value` (a scalar array, `text`
/// flavour); both are cast where a column needs a number, which both dialects accept.
pub(crate) fn rows_of(dialect: Dialect, param: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("json_each({param}) AS j"),
        Dialect::Postgres => {
            // jsonb: parsed once, so each `->>` is a lookup, not another parse of the
            // element (a payload of a kilobyte or more).
            format!("jsonb_array_elements({param}::jsonb) WITH ORDINALITY AS j(value, key)")
        }
    }
}

/// For an `UPDATE ... FROM` the rows of a JSON array parameter (see [`rows_of`]) whose
/// first element is the updated row's `column`: on PostgreSQL, `AND column = ANY(those
/// ids)`, which says nothing new but lets the planner probe the column's index with
/// them. With only the join to a set-returning function it planned a hash join over a
/// sequential scan of the whole table, and grew with it. SQLite walks the JSON rows and
/// probes the key already: nothing.
pub(crate) fn rows_key_filter(dialect: Dialect, column: &str, param: &str) -> String {
    match dialect {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres => format!(
            " AND {column} = ANY(ARRAY(SELECT CAST(k.value->>0 AS BIGINT) \
             FROM jsonb_array_elements({param}::jsonb) AS k(value)))"
        ),
    }
}

/// `column IN (the elements of the JSON array parameter)`, `NOT IN` when `negate`;
/// `number` casts the elements to integers. PostgreSQL gets `= ANY(ARRAY(...))`: it
/// then probes the column's index with the array, where `IN (SELECT ...)` planned a
/// hash join that read the whole table.
pub(crate) fn in_values(
    dialect: Dialect,
    column: &str,
    param: &str,
    number: bool,
    negate: bool,
) -> String {
    let value = if number {
        "CAST(j.value AS BIGINT)"
    } else {
        "j.value"
    };
    match dialect {
        Dialect::Sqlite => {
            let op = if negate { "NOT IN" } else { "IN" };
            format!("{column} {op} (SELECT {value} FROM json_each({param}) AS j)")
        }
        Dialect::Postgres => {
            let op = if negate { "<> ALL" } else { "= ANY" };
            format!(
                "{column} {op}(ARRAY(SELECT {value} \
                 FROM jsonb_array_elements_text({param}::jsonb) AS j(value)))"
            )
        }
    }
}

/// `sql` with PostgreSQL's `$N` placeholders as SQLite's `?N`: SQLite numbers `$N`
/// by order of first appearance, `?N` by N, as PostgreSQL does.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}
