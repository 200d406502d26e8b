//! A `.csv` file with a header line: named numeric columns.
//!
//! The `csv` crate does the reading: it streams the file, handles quoted fields (a
//! comma, a doubled quote or a line break inside quotes), CRLF line ends and a UTF-8
//! byte-order mark. Kiln counts the line breaks it reads, so each row is named by the
//! line it starts on (the crate's positions point before skipped blank lines and miss
//! breaks inside quotes). On top of it kiln checks what a training table needs: a header naming every column once, the same
//! number of fields in every row, and every value a finite number. Blank lines are
//! skipped; fields are trimmed. Errors give the line (1-based) and the column.

use std::collections::VecDeque;
use std::io::{self, Read};

/// A parsed table: column names and, per column, its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The column names, from the header line.
    pub header: Vec<String>,
    /// Each column's values, in row order.
    pub columns: Vec<Vec<f64>>,
    /// The line number (1-based) of each row, for messages.
    pub lines: Vec<usize>,
}

/// Why a table could not be read: reading failed (`io`), or its text is wrong.
#[derive(Debug)]
pub struct Error {
    /// What is wrong, in a sentence.
    pub message: String,
    /// Whether reading failed (rather than the text being wrong).
    pub io: bool,
}

impl Error {
    fn bad(message: String) -> Error {
        Error { message, io: false }
    }
}

/// Parses CSV text. Errors name the line (1-based) and the column.
pub fn parse(text: &str) -> Result<Table, String> {
    from_reader(text.as_bytes()).map_err(|e| e.message)
}

/// The CSV reader's buffer. A record ends at most this far behind the bytes read, so
/// line breaks further back are only counted: a file of blank lines keeps no list.
const CSV_BUFFER: usize = 8 * 1024;

/// The input, counting its line breaks on the way to the CSV reader, and stopping
/// (as at the end of the file) at a NUL byte or past `limit` bytes: the reader would
/// otherwise buffer a record without end from `/dev/zero` or a file that keeps growing.
struct Counted<R> {
    inner: R,
    /// Bytes read so far.
    read: u64,
    /// The most bytes to read.
    limit: u64,
    /// Why reading stopped early, if it did.
    stopped: Option<Stop>,
    /// Offsets of line breaks read but not yet counted (at most `2 * CSV_BUFFER`).
    breaks: VecDeque<u64>,
    /// Line breaks counted: all of them before the end of the last record handled.
    before: usize,
    /// The offset of the last break counted.
    last: Option<u64>,
}

/// Why [`Counted`] stopped reading before the end of its input.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// A NUL byte, at this offset: binary data, not text.
    Nul(u64),
    /// More than the limit.
    TooLarge,
}

impl<R> Counted<R> {
    fn new(inner: R, limit: u64) -> Counted<R> {
        Counted {
            inner,
            read: 0,
            limit,
            stopped: None,
            breaks: VecDeque::new(),
            before: 0,
            last: None,
        }
    }

    fn count_before(&mut self, end: u64) {
        while let Some(&at) = self.breaks.front().filter(|&&at| at < end) {
            self.before += 1;
            self.last = Some(at);
            self.breaks.pop_front();
        }
    }

    /// The line (1-based) a record starts on, given the byte offset where it ends:
    /// the breaks before its end, less those inside its fields and its own terminator.
    /// A record that runs to the end of the file inside an unclosed quote has no
    /// terminator though its last byte is a break; it still starts below the previous
    /// record, which `next` (the first line after that record) bounds.
    fn line_of(&mut self, end: u64, record: &csv::ByteRecord, next: usize) -> usize {
        self.count_before(end);
        let inside = record.as_slice().iter().filter(|&&b| b == b'\n').count();
        let terminator = usize::from(self.last.is_some() && self.last == end.checked_sub(1));
        (1 + self.before.saturating_sub(inside + terminator)).max(next)
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stopped.is_some() {
            return Ok(0);
        }
        // One byte past the limit tells a file of exactly `limit` bytes from a longer one.
        let room = self.limit.saturating_add(1).saturating_sub(self.read);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..want])?;
        if self.read + n as u64 > self.limit {
            self.stopped = Some(Stop::TooLarge);
            return Ok(0);
        }
        if let Some(at) = buf[..n].iter().position(|&b| b == 0) {
            self.stopped = Some(Stop::Nul(self.read + at as u64));
            n = at;
        }
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, b)| **b == b'\n') {
            self.breaks.push_back(self.read + i as u64);
        }
        self.read += n as u64;
        self.count_before(self.read.saturating_sub(2 * CSV_BUFFER as u64));
        Ok(n)
    }
}

/// One record's fields, decoded and trimmed; `None` for a blank line.
fn fields(line: usize, record: &csv::ByteRecord) -> Result<Option<Vec<String>>, Error> {
    let mut out = Vec::with_capacity(record.len());
    for (k, raw) in record.iter().enumerate() {
        let text = std::str::from_utf8(raw).map_err(|_| {
            Error::bad(format!(
                "line {line}, field {}: the text is not UTF-8",
                k + 1
            ))
        })?;
        out.push(text.trim().to_string());
    }
    if out.len() == 1 && out[0].is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

fn check_header(line: usize, header: &[String]) -> Result<(), Error> {
    if header.iter().all(|h| h.parse::<f64>().is_ok()) {
        return Err(Error::bad(format!(
            "line {line}: the first line holds numbers; kiln reads CSV files whose first line is a header naming the columns"
        )));
    }
    for (i, h) in header.iter().enumerate() {
        if h.is_empty() {
            return Err(Error::bad(format!(
                "line {line}: column {} has no name",
                i + 1
            )));
        }
        if header[..i].contains(h) {
            return Err(Error::bad(format!(
                "line {line}: two columns are named `{h}`"
            )));
        }
    }
    Ok(())
}

/// A field as quoted in a message: whole when short, else its first 100 characters.
fn quoted(f: &str) -> String {
    match f.char_indices().nth(100) {
        Some((cut, _)) => format!("{}… ({} characters)", &f[..cut], f.chars().count()),
        None => f.to_string(),
    }
}

/// One value: a finite number, or an error naming its line and column.
fn value(line: usize, column: &str, f: &str) -> Result<f64, Error> {
    let v: f64 = f.parse().map_err(|_| {
        Error::bad(if f.is_empty() {
            format!("line {line}, column `{column}`: the value is missing")
        } else if let Some((first, _)) = f.split_once('\n') {
            format!(
                "line {line}, column `{column}`: `{}…` is not a number; it runs over several lines, so a quote is probably not closed",
                quoted(first.trim_end())
            )
        } else {
            format!("line {line}, column `{column}`: `{}` is not a number", quoted(f))
        })
    })?;
    if !v.is_finite() {
        return Err(Error::bad(format!(
            "line {line}, column `{column}`: the value is {f}; training data must be finite numbers"
        )));
    }
    Ok(v)
}

/// A failure of the reader itself. With flexible rows and byte records the only one
/// left is I/O, but the crate's own message (with its position) covers any other.
fn read_error(e: csv::Error) -> Error {
    if e.is_io_error() {
        let message = match e.into_kind() {
            csv::ErrorKind::Io(io) => format!("cannot read the file: {io}"),
            other => format!("cannot read the file: {other:?}"),
        };
        return Error { message, io: true };
    }
    Error::bad(e.to_string())
}

/// Reads a table from a stream, record by record.
pub fn from_reader(input: impl Read) -> Result<Table, Error> {
    from_reader_limited(input, u64::MAX)
}

/// Reads a table from a stream, record by record, reading at most `limit` bytes.
pub fn from_reader_limited(input: impl Read, limit: u64) -> Result<Table, Error> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(CSV_BUFFER)
        .from_reader(Counted::new(input, limit));
    let table = read_records(&mut reader);
    // Where reading stopped early, that is the error: what the records say after the
    // stop is about a cut file.
    match reader.get_ref().stopped {
        Some(Stop::Nul(at)) => Err(Error::bad(format!(
            "byte {at} is a NUL byte: this is binary data, not CSV text"
        ))),
        Some(Stop::TooLarge) => Err(Error::bad(format!(
            "the file is more than {limit} bytes; kiln reads data files of at most {limit} bytes"
        ))),
        None => table,
    }
}

/// The records of a table: the header, then rows of numbers.
fn read_records<R: Read>(reader: &mut csv::Reader<Counted<R>>) -> Result<Table, Error> {
    let mut record = csv::ByteRecord::new();
    let mut header: Option<Vec<String>> = None;
    let mut columns: Vec<Vec<f64>> = Vec::new();
    let mut row_lines = Vec::new();
    let mut next = 1;
    while reader.read_byte_record(&mut record).map_err(read_error)? {
        let end = reader.position().byte();
        let n = reader.get_mut().line_of(end, &record, next);
        next = n + 1 + record.as_slice().iter().filter(|&&b| b == b'\n').count();
        let Some(row) = fields(n, &record)? else {
            continue;
        };
        let Some(header) = &header else {
            check_header(n, &row)?;
            columns = vec![Vec::new(); row.len()];
            header = Some(row);
            continue;
        };
        if row.len() != header.len() {
            return Err(Error::bad(format!(
                "line {n} has {} fields, but the header names {} columns",
                row.len(),
                header.len()
            )));
        }
        for (k, f) in row.iter().enumerate() {
            columns[k].push(value(n, &header[k], f)?);
        }
        row_lines.push(n);
    }
    let Some(header) = header else {
        return Err(Error::bad(
            "the file is empty: it has no header line".into(),
        ));
    };
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
        assert!(parse("\n  \n").unwrap_err().contains("empty"));
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

    #[test]
    fn a_quoted_field_may_hold_a_line_break() {
        // The header's second name spans lines 1-2, so the rows are on lines 3 and 4.
        let t = parse("a,\"b\nc\",\"y \"\"q\"\"\"\r\n1,2,3\r\n\"4\",5,6\r\n").unwrap();
        assert_eq!(t.header, vec!["a", "b\nc", "y \"q\""]);
        assert_eq!(
            t.columns,
            vec![vec![1.0, 4.0], vec![2.0, 5.0], vec![3.0, 6.0]]
        );
        assert_eq!(t.lines, vec![3, 4]);
        // A row after a multi-line field is reported on its own line.
        let e = parse("\"a\nb\",c\n1,2\n3,x\n").unwrap_err();
        assert_eq!(e, "line 4, column `c`: `x` is not a number");
        // A quote that is never closed swallows the rest of the file; the message says so.
        let e = parse("a,b\n1,\"2\n3,4\n").unwrap_err();
        assert!(
            e.starts_with("line 2, column `b`: `2…` is not a number"),
            "{e}"
        );
        assert!(e.contains("not closed"), "{e}");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_name() {
        let t = parse("\u{feff}x,y\n1,2\n").unwrap();
        assert_eq!(t.header, vec!["x", "y"]);
        assert_eq!(t.lines, vec![2]);
    }

    #[test]
    fn ragged_rows_are_reported_with_their_line() {
        let e = parse("a,b,c\n1,2,3\n\n4,5\n").unwrap_err();
        assert_eq!(e, "line 4 has 2 fields, but the header names 3 columns");
        let e = parse("a,b\n1,2\n3,4,5\n").unwrap_err();
        assert_eq!(e, "line 3 has 3 fields, but the header names 2 columns");
    }

    #[test]
    fn bytes_that_are_not_utf8_name_their_place() {
        let e = from_reader(&b"a,b\n1,\xff\n"[..]).unwrap_err();
        assert!(!e.io);
        assert_eq!(e.message, "line 2, field 2: the text is not UTF-8");
    }

    #[test]
    fn line_numbers_hold_after_many_blank_lines_and_keep_no_list_of_them() {
        let blank = "\r\n".repeat(100_000);
        let t = parse(&format!("{blank}a,b\n{blank}1,2\n")).unwrap();
        assert_eq!(t.lines, vec![200_002]);
        let e = parse(&format!("{blank}a,b\n1,x\n")).unwrap_err();
        assert_eq!(e, "line 100002, column `b`: `x` is not a number");
        let mut c = Counted::new(blank.as_bytes(), u64::MAX);
        let mut buf = [0u8; CSV_BUFFER];
        while c.read(&mut buf).unwrap() > 0 {
            assert!(c.breaks.len() <= 2 * CSV_BUFFER);
        }
        assert_eq!(c.before + c.breaks.len(), 100_000);
    }
}
