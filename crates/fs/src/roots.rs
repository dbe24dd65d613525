//! How callers address the configured roots.
//!
//! With one root, paths are plain relative paths inside it (`docs/a.md`). With several, the
//! first component names the root (`data/docs/a.md`), and `.` stands for the list of roots.

use crate::{
    beneath::Root,
    error::FsError,
    guard::{RelPath, check_path},
};

#[derive(Debug)]
pub struct Roots {
    roots: Vec<Root>,
}

/// What a caller's path points at.
#[derive(Debug)]
pub enum Target<'a> {
    /// A path inside one root.
    In(&'a Root, RelPath),
    /// `.` with several roots: the virtual directory holding them.
    AllRoots,
}

impl Roots {
    /// `roots` must be non-empty with unique names (checked by the config).
    pub fn new(roots: Vec<Root>) -> Self {
        Self { roots }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Root> {
        self.roots.iter()
    }

    fn single(&self) -> Option<&Root> {
        match self.roots.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    pub fn any_writable(&self) -> bool {
        self.roots.iter().any(|r| r.writable)
    }

    /// Checks a caller's path (see `guard::check_path`) and finds its root.
    pub fn resolve(&self, path: &str) -> Result<Target<'_>, FsError> {
        let rel = check_path(path)?;
        if let Some(only) = self.single() {
            return Ok(Target::In(only, rel));
        }
        let mut components = rel.components();
        let Some(name) = components.next() else {
            return Ok(Target::AllRoots);
        };
        let root =
            self.roots
                .iter()
                .find(|r| r.name == name)
                .ok_or_else(|| FsError::UnknownRoot {
                    name: name.to_owned(),
                    known: self.names(),
                })?;
        let rest: Vec<&str> = components.collect();
        // Already checked component by component; re-checking keeps one code path.
        let inner = if rest.is_empty() {
            RelPath::root()
        } else {
            check_path(&rest.join("/"))?
        };
        Ok(Target::In(root, inner))
    }

    /// Like [`Roots::resolve`], for operations that need a single file or directory.
    pub fn resolve_in(
        &self,
        path: &str,
        action: &'static str,
    ) -> Result<(&Root, RelPath), FsError> {
        match self.resolve(path)? {
            Target::In(root, rel) => Ok((root, rel)),
            Target::AllRoots => Err(FsError::NeedsRoot {
                action,
                known: self.names(),
            }),
        }
    }

    /// The path a caller uses for `rel` inside `root`.
    pub fn caller_path(&self, root: &Root, rel: &RelPath) -> String {
        match (self.single().is_some(), rel.is_root()) {
            (true, true) => ".".to_owned(),
            (true, false) => rel.as_str().to_owned(),
            (false, true) => root.name.clone(),
            (false, false) => format!("{}/{}", root.name, rel.as_str()),
        }
    }

    /// Finds the root holding an absolute path (from a `file://` URI) and the path inside
    /// it. Matching is per component, so root `/data` never claims `/data-evil/x`; the
    /// longest matching root wins when roots nest.
    pub fn locate_absolute<'a>(&self, absolute: &'a str) -> Option<(&Root, &'a str)> {
        self.roots
            .iter()
            .filter_map(|root| {
                let base = root.path.to_str()?;
                let rest = absolute.strip_prefix(base)?;
                if base == "/" {
                    return Some((root, rest));
                }
                match rest {
                    "" => Some((root, "")),
                    _ => rest.strip_prefix('/').map(|inner| (root, inner)),
                }
            })
            .max_by_key(|(root, _)| root.path.as_os_str().len())
    }

    pub fn names(&self) -> String {
        self.roots
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
