//! Plain-text tables for the operator commands: a header and rows whose columns line
//! up whatever the widths of their values, with numbers aligned to the right.
//!
//! No borders, two spaces between columns and no trailing spaces, so the output reads
//! in a terminal and still splits on whitespace for `grep` and `awk`.

use comfy_table::{CellAlignment, Table, presets::NOTHING};

/// A column: its header and how its values are aligned.
#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    pub header: &'static str,
    pub numeric: bool,
}

impl Column {
    /// Text, aligned to the left.
    pub(super) const fn text(header: &'static str) -> Column {
        Column {
            header,
            numeric: false,
        }
    }

    /// A number, aligned to the right.
    pub(super) const fn number(header: &'static str) -> Column {
        Column {
            header,
            numeric: true,
        }
    }
}

/// The table of `rows` under `columns`, one line per row (line breaks inside a value
/// become spaces, so a row never spans two lines).
pub(super) fn render(columns: &[Column], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(columns.iter().map(|c| c.header).collect::<Vec<_>>());
    for row in rows {
        table.add_row(row.into_iter().map(one_line).collect::<Vec<_>>());
    }
    for (index, column) in columns.iter().enumerate() {
        if let Some(c) = table.column_mut(index) {
            c.set_padding((0, 2));
            if column.numeric {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table.trim_fmt()
}

fn one_line(value: String) -> String {
    if value.contains(['\n', '\r']) {
        value.replace("\r\n", " ").replace(['\n', '\r'], " ")
    } else {
        value
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Where each cell of each line starts and ends (in characters), found in order, so
    /// a value that also occurs earlier in the line is not mistaken for the cell.
    fn spans(line: &str, cells: &[&str]) -> Vec<(usize, usize)> {
        let mut from = 0;
        cells
            .iter()
            .map(|cell| {
                let at = from
                    + line[from..]
                        .find(cell)
                        .unwrap_or_else(|| panic!("{cell:?} not in {line:?} after {from}"));
                from = at + cell.len();
                (line[..at].chars().count(), line[..from].chars().count())
            })
            .collect()
    }

    /// Asserts that `text` is the header line and one line per row, and that every
    /// column starts (text) or ends (numbers) at the same character in each of them
    /// (the header included).
    pub(crate) fn assert_aligned(text: &str, columns: &[Column], rows: &[Vec<String>]) {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            rows.len() + 1,
            "header and one line per row:\n{text}"
        );
        let header: Vec<&str> = columns.iter().map(|c| c.header).collect();
        let mut all = vec![spans(lines[0], &header)];
        for (line, row) in lines[1..].iter().zip(rows) {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            all.push(spans(line, &cells));
        }
        for (index, column) in columns.iter().enumerate() {
            let edge = |s: &Vec<(usize, usize)>| {
                if column.numeric {
                    s[index].1
                } else {
                    s[index].0
                }
            };
            let expected = edge(&all[0]);
            for (n, (line, s)) in lines.iter().zip(&all).enumerate() {
                // An empty value has no edge of its own to check.
                if n > 0 && rows[n - 1][index].is_empty() {
                    continue;
                }
                assert_eq!(
                    edge(s),
                    expected,
                    "column {:?} out of line in {line:?}:\n{text}",
                    column.header
                );
            }
        }
        for line in &lines {
            assert_eq!(line.trim_end(), *line, "trailing spaces in {line:?}");
        }
    }

    const COLUMNS: [Column; 3] = [
        Column::number("ID"),
        Column::text("NAME"),
        Column::text("NOTE"),
    ];

    #[test]
    fn header_and_rows_line_up_whatever_the_widths() {
        let rows = vec![
            vec![
                "7".to_owned(),
                "a-very-long-workflow-slug".to_owned(),
                "x".to_owned(),
            ],
            vec![
                "123456789".to_owned(),
                "b".to_owned(),
                "HTTP 500".to_owned(),
            ],
            vec!["42".to_owned(), "ünïcödé".to_owned(), String::new()],
        ];
        let text = render(&COLUMNS, rows.clone());
        assert_aligned(&text, &COLUMNS, &rows);
    }

    /// What padding by hand printed when a JSON number ignored the width: the check
    /// must refuse it.
    #[test]
    #[should_panic(expected = "out of line")]
    fn the_check_refuses_a_header_out_of_line_with_its_rows() {
        let text = "      ID  NAME  NOTE\n7  a  x";
        assert_aligned(text, &COLUMNS, &[vec!["7".into(), "a".into(), "x".into()]]);
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        assert_eq!(render(&COLUMNS, Vec::new()), "ID  NAME  NOTE");
    }

    #[test]
    fn a_value_with_line_breaks_stays_on_its_row() {
        let rows = vec![vec![
            "1".to_owned(),
            "n".to_owned(),
            "one\ntwo\r\nthree".to_owned(),
        ]];
        let text = render(&COLUMNS, rows);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.ends_with("one two three"), "{text}");
    }
}
