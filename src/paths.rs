//! Output files: where a write lands and whether it may (DESIGN §3).
//!
//! Every file kiln writes (weights, checkpoints, data outputs, plots) goes through
//! [`write_atomic`]: a temporary file in the target's folder, synced, renamed over the
//! target. A symlink is written through (its target is replaced, the link kept); an
//! existing file that is not a regular file (a device, a pipe, a directory) is refused.
//! Temporary files are named `.NAME.kiln-tmp.PID.N`, so that a later write to the same
//! folder recognizes those whose process is gone (killed mid-write) and removes them;
//! a live process's temporary file is never touched.
//!
//! [`guard_outputs`] is the check a command runs before it starts: no output may be one
//! of the run's inputs or another output (same canonical path, or same device and inode
//! — hard links and `./x` against `x` included), and none may be a non-regular file.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The marker between a temporary file's target name and its owner's process id.
const TEMP_MARK: &str = ".kiln-tmp.";

/// At most this many symlinks are followed (as Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Folders whose abandoned temporary files this process has already removed.
static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Writes a file atomically through `write`: to a temporary file in the same folder as
/// the file finally written, synced, then renamed over it. A symlink at `path` is
/// followed (the link stays, its target is replaced); an existing non-regular file is
/// refused. On any error the old file (if any) is untouched and the temporary file is
/// removed. The first write of the process to a folder also removes the temporary files
/// that dead processes left there.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let target = resolve_links(path)?;
    let existing = match fs::metadata(&target) {
        Ok(m) if m.is_file() => Some(m),
        Ok(m) => return Err(not_regular(&m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = folder_of(&target);
    sweep_once(&dir);
    let (tmp, file) = create_temp(&dir, name)?;
    let result = (|| {
        if let Some(meta) = &existing {
            // Keep the permissions of the file being replaced.
            let _ = file.set_permissions(meta.permissions());
        }
        let mut out = BufWriter::new(&file);
        write(&mut out)?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    drop(file);
    match result {
        Ok(()) => {
            // Make the rename itself durable (best effort: not every platform can sync a
            // directory).
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The folder a file is in (`.` for a bare name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates this process's next temporary file for `name` in `dir`, locked while it lives
/// (so that a sweeper in another PID namespace still sees it is in use).
fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(temp_name(name, pid, n));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => {
                // Best effort: some file systems have no locks; the PID still guards.
                let _ = f.try_lock();
                return Ok((tmp, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < u64::MAX => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `.NAME.kiln-tmp.PID.N`.
fn temp_name(name: &OsStr, pid: u32, n: u64) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!("{TEMP_MARK}{pid}.{n}"));
    s
}

/// The owner's process id of a kiln temporary file's name, `None` for any other name.
fn temp_owner(name: &OsStr) -> Option<u32> {
    let name = name.to_str()?;
    let at = name.rfind(TEMP_MARK)?;
    if !name.starts_with('.') || at < 2 {
        return None;
    }
    let (pid, n) = name[at + TEMP_MARK.len()..].split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Whether a process of this id exists (or may: when it cannot be known, yes).
fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return true;
        };
        if p <= 0 {
            return true;
        }
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        if unsafe { libc::kill(p, 0) } == 0 {
            return true;
        }
        io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Removes [`sweep`]'s findings in `dir` once per process.
fn sweep_once(dir: &Path) {
    let key = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
    if swept.get_or_insert_with(HashSet::new).insert(key) {
        drop(swept);
        sweep(dir);
    }
}

/// Removes the temporary files in `dir` that dead processes left (killed mid-write):
/// those named by [`temp_name`] whose process is gone and which nobody holds locked.
/// Returns how many were removed. Failures are ignored: cleaning up is a courtesy.
fn sweep(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let Some(pid) = temp_owner(&e.file_name()) else {
            continue;
        };
        if pid_alive(pid) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = e.path();
        if abandoned(&path) && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether nobody holds a temporary file's lock (or locks are not supported there).
fn abandoned(path: &Path) -> bool {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Never block on a pipe, never follow a link planted under that name.
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let Ok(f) = opts.open(path) else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    match f.try_lock() {
        Ok(()) => true,
        Err(fs::TryLockError::WouldBlock) => false,
        Err(fs::TryLockError::Error(_)) => true,
    }
}

/// The file a write to `path` lands in: `path` with its symlinks followed (a dangling
/// link gives its missing target). Fails on a loop of links, or an unreadable link.
pub fn resolve_links(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p)?;
                p = if to.is_absolute() {
                    to
                } else {
                    folder_of(&p).join(to)
                };
            }
            // Not a link, or nothing there (a missing file, a folder that cannot be):
            // what writing it would do is for the write to say.
            _ => return Ok(p),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("more than {MAX_LINKS} symbolic links in a row (a loop?)"),
    ))
}

/// The error for an existing output that is not a regular file.
fn not_regular(meta: &fs::Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "it is {}, not a regular file; kiln writes only regular files",
            kind_of(meta)
        ),
    )
}

/// `a directory`, `a character device`, … for messages.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// What makes two paths the same file: the canonical path of what a write would reach,
/// and the device and inode when the file exists.
#[derive(Debug)]
struct Identity {
    path: PathBuf,
    node: Option<(u64, u64)>,
}

impl Identity {
    fn of(path: &Path) -> Identity {
        let target = resolve_links(path).unwrap_or_else(|_| path.to_path_buf());
        let canonical = fs::canonicalize(&target).ok().or_else(|| {
            let dir = fs::canonicalize(folder_of(&target)).ok()?;
            Some(dir.join(target.file_name()?))
        });
        let path = canonical
            .or_else(|| std::path::absolute(&target).ok())
            .unwrap_or(target.clone());
        let node = fs::metadata(&target).ok().and_then(|m| node_of(&m));
        Identity { path, node }
    }

    fn same(&self, other: &Identity) -> bool {
        self.path == other.path || (self.node.is_some() && self.node == other.node)
    }
}

#[cfg(unix)]
fn node_of(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn node_of(_: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Whether two paths reach the same file (by canonical path, or by device and inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    Identity::of(a).same(&Identity::of(b))
}

/// Checks a run's outputs before it starts. `inputs` and `outputs` are `(role, path)`,
/// the role as the user knows it (`the spec`, `--data`, `--out`). Refuses an output that
/// is one of the inputs or an earlier output (a message naming both roles), and an
/// output that exists but is not a regular file. An input a run rewrites on purpose (a
/// checkpoint it resumes and keeps writing) is not to be listed among the inputs.
pub fn guard_outputs(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> Result<(), String> {
    let ins: Vec<Identity> = inputs.iter().map(|(_, p)| Identity::of(p)).collect();
    let mut outs: Vec<Identity> = Vec::new();
    for &(role, path) in outputs {
        let id = Identity::of(path);
        let target = resolve_links(path).map_err(|e| format!("{role} {}: {e}", path.display()))?;
        if let Ok(m) = fs::metadata(&target)
            && !m.is_file()
        {
            return Err(format!("{role} {}: {}", path.display(), not_regular(&m)));
        }
        if let Some(i) = ins.iter().position(|x| x.same(&id)) {
            let (other, other_path) = inputs[i];
            return Err(format!(
                "{role} {} is the same file as {other} {}: writing it would destroy {other}; give {role} another path",
                path.display(),
                other_path.display()
            ));
        }
        if let Some(i) = outs.iter().position(|x| x.same(&id)) {
            let (other, other_path) = outputs[i];
            return Err(format!(
                "{role} {} is the same file as {other} {}: one would overwrite the other; give {role} another path",
                path.display(),
                other_path.display()
            ));
        }
        outs.push(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kiln-paths-{name}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The id of a process that has exited (and been reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        pid
    }

    #[test]
    fn temporary_names_name_their_owner() {
        let n = temp_name(OsStr::new("w.ckpt.safetensors"), 4321, 7);
        assert_eq!(n, ".w.ckpt.safetensors.kiln-tmp.4321.7");
        assert_eq!(temp_owner(&n), Some(4321));
        // A name that itself holds the marker: the last one counts.
        let n = temp_name(OsStr::new("a.kiln-tmp.9.9"), 12, 0);
        assert_eq!(temp_owner(&n), Some(12));
        for other in [
            ".w.safetensors.4321.7.tmp",
            "w.safetensors.kiln-tmp.4321.7",
            ".kiln-tmp.4321.7",
            ".w.kiln-tmp.4321",
            ".w.kiln-tmp.4321.",
            ".w.kiln-tmp.43x1.7",
            ".w.kiln-tmp.0.7",
            ".w.kiln-tmp.99999999999.7",
            "w.safetensors",
        ] {
            assert_eq!(temp_owner(OsStr::new(other)), None, "{other}");
        }
    }

    #[test]
    fn a_dead_processs_temporary_files_are_swept_a_live_ones_kept() {
        let dir = temp_dir("sweep");
        let dead = dead_pid();
        let me = std::process::id();
        let stale = temp_name(OsStr::new("w.safetensors"), dead, 3);
        let mine = temp_name(OsStr::new("w.safetensors"), me, 3);
        let user = format!(".w.safetensors.{dead}.3.tmp");
        for f in [&stale, &mine, &OsString::from(&user)] {
            fs::write(dir.join(f), b"half a file").unwrap();
        }
        // A dead owner's file that someone holds locked (as a live writer in another PID
        // namespace would) is kept too.
        let locked = temp_name(OsStr::new("c.safetensors"), dead, 0);
        fs::write(dir.join(&locked), b"in use").unwrap();
        let holder = File::open(dir.join(&locked)).unwrap();
        holder.lock().unwrap();
        assert_eq!(sweep(&dir), 1);
        let left = files_in(&dir);
        assert!(
            !left.contains(&stale.to_string_lossy().into_owned()),
            "{left:?}"
        );
        assert!(
            left.contains(&mine.to_string_lossy().into_owned()),
            "{left:?}"
        );
        assert!(left.contains(&user), "{left:?}");
        assert!(
            left.contains(&locked.to_string_lossy().into_owned()),
            "{left:?}"
        );
        // Once the lock is gone, the dead owner's file goes.
        drop(holder);
        assert_eq!(sweep(&dir), 1);
        assert_eq!(files_in(&dir).len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_first_write_to_a_folder_sweeps_it() {
        let dir = temp_dir("first-write");
        let stale = temp_name(OsStr::new("w.safetensors"), dead_pid(), 0);
        let mine = temp_name(OsStr::new("w.safetensors"), std::process::id(), u64::MAX);
        fs::write(dir.join(&stale), b"abandoned").unwrap();
        fs::write(dir.join(&mine), b"being written").unwrap();
        write_atomic(&dir.join("w.safetensors"), |out| out.write_all(b"new")).unwrap();
        assert_eq!(
            files_in(&dir),
            [mine.to_string_lossy().into_owned(), "w.safetensors".into()]
        );
        assert_eq!(fs::read(dir.join("w.safetensors")).unwrap(), b"new");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_written_through_and_kept() {
        use std::os::unix::fs::symlink;
        let dir = temp_dir("link");
        fs::create_dir(dir.join("real")).unwrap();
        fs::write(dir.join("real/w"), b"old").unwrap();
        // A relative link to a relative link.
        symlink("real/w", dir.join("a")).unwrap();
        symlink("a", dir.join("b")).unwrap();
        write_atomic(&dir.join("b"), |out| out.write_all(b"new")).unwrap();
        assert!(fs::symlink_metadata(dir.join("b")).unwrap().is_symlink());
        assert!(fs::symlink_metadata(dir.join("a")).unwrap().is_symlink());
        assert_eq!(fs::read(dir.join("real/w")).unwrap(), b"new");
        assert_eq!(files_in(&dir.join("real")), ["w"]);
        // A dangling link: its target is created.
        symlink("real/v", dir.join("c")).unwrap();
        write_atomic(&dir.join("c"), |out| out.write_all(b"v")).unwrap();
        assert!(fs::symlink_metadata(dir.join("c")).unwrap().is_symlink());
        assert_eq!(fs::read(dir.join("real/v")).unwrap(), b"v");
        // A loop is an error, not a hang.
        symlink("loop2", dir.join("loop1")).unwrap();
        symlink("loop1", dir.join("loop2")).unwrap();
        let e = write_atomic(&dir.join("loop1"), |out| out.write_all(b"x")).unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
        let e = guard_outputs(&[], &[("--out", &dir.join("loop1"))]).unwrap_err();
        assert!(
            e.starts_with("--out ") && e.contains("symbolic links"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn non_regular_files_are_refused_not_replaced() {
        use std::os::unix::fs::{FileTypeExt, symlink};
        let dir = temp_dir("special");
        let fifo = dir.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        symlink("/dev/null", dir.join("null")).unwrap();
        for (p, kind) in [
            (fifo.clone(), "a named pipe"),
            (dir.join("null"), "a character device"),
            (dir.clone(), "a directory"),
        ] {
            let e = write_atomic(&p, |out| out.write_all(b"x")).unwrap_err();
            assert!(e.to_string().contains(kind), "{e}");
            assert!(e.to_string().contains("not a regular file"), "{e}");
            let ins = [("the spec", Path::new("/nonexistent/s.yaml"))];
            let e = guard_outputs(&ins, &[("--out", &p)]).unwrap_err();
            assert!(e.contains("--out") && e.contains(kind), "{e}");
        }
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(fs::symlink_metadata(dir.join("null")).unwrap().is_symlink());
        assert_eq!(files_in(&dir), ["null", "pipe"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn outputs_that_are_inputs_are_refused_by_path_and_by_inode() {
        use std::os::unix::fs::symlink;
        let dir = temp_dir("guard");
        let data = dir.join("d.npz");
        fs::write(&data, b"data").unwrap();
        fs::hard_link(&data, dir.join("hard")).unwrap();
        symlink(&data, dir.join("soft")).unwrap();
        let dotted = dir.join("sub/../d.npz");
        fs::create_dir(dir.join("sub")).unwrap();
        let ins = [("the spec", dir.join("s.yaml")), ("the data", data.clone())];
        let ins: Vec<(&str, &Path)> = ins.iter().map(|(r, p)| (*r, p.as_path())).collect();
        for out in [data.clone(), dir.join("hard"), dir.join("soft"), dotted] {
            let e = guard_outputs(&ins, &[("--out", &out)]).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "--out {} is the same file as the data {}: writing it would destroy the data; give --out another path",
                    out.display(),
                    data.display()
                )
            );
        }
        // A spec that does not exist yet is still compared by path.
        let e = guard_outputs(&ins, &[("--log", &dir.join("sub/../s.yaml"))]).unwrap_err();
        assert!(e.starts_with("--log ") && e.contains("the spec"), "{e}");
        // Two outputs that would be one file (neither exists yet).
        let w = dir.join("w");
        let e =
            guard_outputs(&ins, &[("--out", &w), ("--checkpoint", &dir.join("./w"))]).unwrap_err();
        assert!(
            e.contains("--checkpoint")
                && e.contains("as --out")
                && e.contains("overwrite the other"),
            "{e}"
        );
        // Distinct files pass.
        guard_outputs(&ins, &[("--out", &w), ("--checkpoint", &dir.join("c"))]).unwrap();
        assert!(same_file(&data, &dir.join("hard")));
        assert!(!same_file(&data, &w));
        fs::remove_dir_all(&dir).unwrap();
    }
}
