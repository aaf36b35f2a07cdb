//! Following a file the way `tail -F` does, but by checks instead of a
//! stream: each `read` returns the complete lines appended since the last.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The longest line kept: a longer one is passed on cut at this length, so a
/// file without newlines cannot grow the host's memory.
const MAX_LINE: usize = 64 * 1024;

/// The open file, where we are in it, and a partial last line.
pub struct Tail {
    path: PathBuf,
    file: Option<(File, u64)>,
    offset: u64,
    partial: Vec<u8>,
    from_start: bool,
    rotations: u64,
}

impl Tail {
    /// Follows `path`; the first read starts at its end unless `from_start`.
    pub fn new(path: PathBuf, from_start: bool) -> Tail {
        Tail {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
            from_start,
            rotations: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many rotations were followed.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Complete lines appended since the last read: at most `max_lines`,
    /// and no more once `max_bytes` are reached (one line may pass it by
    /// up to [`MAX_LINE`]); the rest waits for the next read.
    pub fn read(&mut self, max_lines: usize, max_bytes: usize) -> io::Result<Vec<String>> {
        let mut batch = Batch {
            lines: Vec::new(),
            bytes: 0,
            max_lines,
            max_bytes,
        };
        let current = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(meta.ino()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        match (&self.file, current) {
            (None, None) => {
                self.from_start = true;
                return Ok(batch.lines);
            }
            (None, Some(_)) => {
                let file = File::open(&self.path)?;
                let inode = file.metadata()?.ino();
                self.offset = if self.from_start {
                    0
                } else {
                    file.metadata()?.len()
                };
                self.file = Some((file, inode));
            }
            (Some((_, inode)), now) if now != Some(*inode) => {
                // Rotated (renamed, or removed): finish the old file through
                // the handle we hold (its last line even without a newline),
                // over as many reads as it takes, then start the new one
                // from its top.
                if !self.drain(&mut batch)? {
                    return Ok(batch.lines);
                }
                if !self.partial.is_empty() {
                    batch.push(String::from_utf8_lossy(&self.partial).into_owned());
                }
                self.file = None;
                self.offset = 0;
                self.partial.clear();
                self.rotations += 1;
                if now.is_some() {
                    let file = File::open(&self.path)?;
                    let inode = file.metadata()?.ino();
                    self.file = Some((file, inode));
                }
            }
            _ => {}
        }
        // Only the file found on the first read holds history to skip: a
        // file that appears later is new, and is read from its top.
        self.from_start = true;
        if let Some((file, _)) = &self.file {
            if file.metadata()?.len() < self.offset {
                // Truncated in place (`> app.log`): start over from the top.
                self.offset = 0;
                self.partial.clear();
            }
        }
        self.drain(&mut batch)?;
        Ok(batch.lines)
    }

    /// Reads lines into `batch` until it is full or the file ends; whether
    /// it reached the end.
    fn drain(&mut self, batch: &mut Batch) -> io::Result<bool> {
        let Some((file, _)) = &mut self.file else {
            return Ok(true);
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buffer = [0u8; 64 * 1024];
        while !batch.full() {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                return Ok(true);
            }
            let mut consumed = 0;
            for (at, byte) in buffer[..read].iter().enumerate() {
                if *byte == b'\n' {
                    self.partial.extend_from_slice(&buffer[consumed..at]);
                    batch.push(
                        String::from_utf8_lossy(&self.partial)
                            .trim_end_matches('\r')
                            .to_owned(),
                    );
                    self.partial.clear();
                    consumed = at + 1;
                    if batch.full() {
                        break;
                    }
                }
            }
            if batch.full() {
                self.offset += consumed as u64;
                return Ok(false);
            }
            self.partial.extend_from_slice(&buffer[consumed..read]);
            self.offset += read as u64;
            if self.partial.len() >= MAX_LINE {
                batch.push(String::from_utf8_lossy(&self.partial[..MAX_LINE]).into_owned());
                self.partial.clear();
            }
        }
        Ok(false)
    }
}

/// The lines of one read and what they may grow to.
struct Batch {
    lines: Vec<String>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Batch {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push(line);
    }

    fn full(&self) -> bool {
        self.lines.len() >= self.max_lines || self.bytes >= self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// No byte limit to speak of.
    const ANY: usize = usize::MAX;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn reads_only_what_was_appended_and_waits_for_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "old line\n");
        let mut tail = Tail::new(path.clone(), false);
        assert!(tail.read(100, ANY).unwrap().is_empty());
        append(&path, "one\ntw");
        assert_eq!(tail.read(100, ANY).unwrap(), ["one"]);
        append(&path, "o\n");
        assert_eq!(tail.read(100, ANY).unwrap(), ["two"]);
    }

    #[test]
    fn rotation_loses_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(100, ANY).unwrap();
        let mut writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writer.write_all(b"before rotation\n").unwrap();
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        writer.write_all(b"late line in the old file\n").unwrap();
        append(&path, "first line of the new file\n");
        assert_eq!(
            tail.read(100, ANY).unwrap(),
            [
                "before rotation",
                "late line in the old file",
                "first line of the new file"
            ]
        );
        assert_eq!(tail.rotations(), 1);
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_top() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut tail = Tail::new(path.clone(), false);
        assert!(tail.read(100, ANY).unwrap().is_empty());
        append(&path, "born with a line\n");
        assert_eq!(tail.read(100, ANY).unwrap(), ["born with a line"]);
    }

    #[test]
    fn a_line_without_end_is_cut_at_max_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(10, ANY).unwrap();
        append(&path, &"x".repeat(MAX_LINE * 2 + 10));
        let lines = tail.read(10, ANY).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
    }

    #[test]
    fn the_rotated_files_unterminated_last_line_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(10, ANY).unwrap();
        append(&path, "complete\nno newline at the end");
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        append(&path, "new\n");
        assert_eq!(
            tail.read(10, ANY).unwrap(),
            ["complete", "no newline at the end", "new"]
        );
    }

    #[test]
    fn truncation_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(100, ANY).unwrap();
        append(&path, "a long line before truncation\n");
        tail.read(100, ANY).unwrap();
        std::fs::write(&path, "fresh\n").unwrap();
        assert_eq!(tail.read(100, ANY).unwrap(), ["fresh"]);
    }

    #[test]
    fn at_most_max_bytes_per_read_the_rest_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(10, ANY).unwrap();
        append(&path, "aaaa\nbbbb\ncccc\n");
        // Five bytes a line with its newline: the second line reaches 10.
        assert_eq!(tail.read(100, 10).unwrap(), ["aaaa", "bbbb"]);
        assert_eq!(tail.read(100, 10).unwrap(), ["cccc"]);
    }

    #[test]
    fn a_rotated_file_is_finished_over_several_reads_before_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(10, ANY).unwrap();
        append(&path, "1\n2\n3\n");
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        append(&path, "new\n");
        assert_eq!(tail.read(2, ANY).unwrap(), ["1", "2"]);
        assert_eq!(tail.rotations(), 0);
        assert_eq!(tail.read(2, ANY).unwrap(), ["3", "new"]);
        assert_eq!(tail.rotations(), 1);
    }

    #[test]
    fn at_most_max_lines_per_read_the_rest_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(10, ANY).unwrap();
        append(&path, "1\n2\n3\n");
        assert_eq!(tail.read(2, ANY).unwrap(), ["1", "2"]);
        assert_eq!(tail.read(2, ANY).unwrap(), ["3"]);
    }
}
