//! A `.csv` file with a header line: named numeric columns. Fields may be quoted;
//! blank lines are skipped. Every value must be a finite number; errors give the line
//! and the column.

/// A parsed table: column names and, per column, its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub columns: Vec<Vec<f64>>,
    /// The line number (1-based) of each row, for messages.
    pub lines: Vec<usize>,
}

fn split(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut cur).trim().to_string());
                was_quoted = false;
            }
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(cur.trim().to_string());
    Ok(fields)
}

/// Parses CSV text. Errors name the line (1-based) and the column.
pub fn parse(text: &str) -> Result<Table, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((hl, header_line)) = lines.next() else {
        return Err("the file is empty: it has no header line".into());
    };
    let header = split(header_line).map_err(|e| format!("line {}: {e}", hl + 1))?;
    if header.iter().all(|h| h.parse::<f64>().is_ok()) {
        return Err(format!(
            "line {}: the first line holds numbers; kiln reads CSV files whose first line is a header naming the columns",
            hl + 1
        ));
    }
    for (i, h) in header.iter().enumerate() {
        if h.is_empty() {
            return Err(format!("line {}: column {} has no name", hl + 1, i + 1));
        }
        if header[..i].contains(h) {
            return Err(format!("line {}: two columns are named `{h}`", hl + 1));
        }
    }
    let mut columns = vec![Vec::new(); header.len()];
    let mut row_lines = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        let fields = split(line).map_err(|e| format!("line {n}: {e}"))?;
        if fields.len() != header.len() {
            return Err(format!(
                "line {n} has {} fields, but the header names {} columns",
                fields.len(),
                header.len()
            ));
        }
        for (k, f) in fields.iter().enumerate() {
            let v: f64 = f.parse().map_err(|_| {
                if f.is_empty() {
                    format!("line {n}, column `{}`: the value is missing", header[k])
                } else {
                    format!("line {n}, column `{}`: `{f}` is not a number", header[k])
                }
            })?;
            if !v.is_finite() {
                return Err(format!(
                    "line {n}, column `{}`: the value is {f}; training data must be finite numbers",
                    header[k]
                ));
            }
            columns[k].push(v);
        }
        row_lines.push(n);
    }
    Ok(Table {
        header,
        columns,
        lines: row_lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_lines() {
        let t = parse("a,\"b, c\",y\n1,2,3\n\n4,5e-1,-6\n").unwrap();
        assert_eq!(t.header, vec!["a", "b, c", "y"]);
        assert_eq!(t.columns[1], vec![2.0, 0.5]);
        assert_eq!(t.lines, vec![2, 4]);
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("1,2\n3,4\n").unwrap_err().contains("header"));
        assert!(
            parse("a,b\n1\n")
                .unwrap_err()
                .contains("line 2 has 1 fields")
        );
        let e = parse("a,b\n1,x\n").unwrap_err();
        assert!(e.contains("line 2, column `b`"), "{e}");
        assert!(parse("a,b\n1,nan\n").unwrap_err().contains("finite"));
        assert!(parse("a,a\n1,2\n").is_err());
    }
}
