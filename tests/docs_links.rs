//! The documentation's links stay inside the repository and resolve: every relative link of
//! README.md and docs/*.md names a file or folder that exists (and, for a `#fragment` into a
//! Markdown file, a heading of it), and no file refers to documents that were never in the
//! repository.

use std::fs;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown file under docs/.
fn documents() -> Vec<PathBuf> {
    let mut documents = vec![root().join("README.md")];
    let docs = root().join("docs");
    let entries = fs::read_dir(&docs).unwrap_or_else(|e| panic!("{}: {e}", docs.display()));
    for entry in entries {
        let path = entry.expect("a docs/ entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            documents.push(path);
        }
    }
    documents.sort();
    documents
}

/// The targets of the `[text](target)` links of a Markdown text, outside fenced code blocks.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut anchors = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            anchors.push(anchor_of(line.trim_start_matches('#')));
        }
    }
    anchors
}

/// `path` with `.` and `..` resolved lexically; `None` when it climbs above the repository.
fn inside_repository(path: &Path) -> Option<PathBuf> {
    let mut resolved = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !resolved.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            Component::Normal(part) => resolved.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(resolved)
}

/// What is wrong with one link of `document`, if anything.
fn broken(document: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (target, None),
    };
    let relative_dir = document
        .parent()
        .and_then(|dir| dir.strip_prefix(root()).ok())
        .expect("documents are in the repository");
    let file = if path.is_empty() {
        document.strip_prefix(root()).unwrap().to_path_buf()
    } else {
        match inside_repository(&relative_dir.join(path)) {
            Some(file) => file,
            None => return Some(format!("{target}: outside the repository")),
        }
    };
    let absolute = root().join(&file);
    if !absolute.exists() {
        return Some(format!("{target}: {} does not exist", file.display()));
    }
    if let Some(fragment) = fragment
        && absolute.extension().is_some_and(|ext| ext == "md")
    {
        let text = fs::read_to_string(&absolute).unwrap();
        if !anchors(&text).iter().any(|anchor| anchor == fragment) {
            return Some(format!(
                "{target}: no heading #{fragment} in {}",
                file.display()
            ));
        }
    }
    None
}

#[test]
fn every_relative_link_of_the_docs_resolves_inside_the_repository() {
    let mut problems = Vec::new();
    for document in documents() {
        let text = fs::read_to_string(&document).unwrap();
        for target in link_targets(&text) {
            if let Some(problem) = broken(&document, &target) {
                problems.push(format!("{}: {problem}", document.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// Every file of the repository's own text, without build output, caches or VCS data.
fn repository_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with('.') || matches!(name.as_ref(), "target" | "work" | "corpus") {
            continue;
        }
        if path.is_dir() {
            repository_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

#[test]
fn no_file_refers_to_documents_outside_the_repository() {
    // Spelled in pieces, so that this file does not find itself.
    let outside = [
        concat!("../", "shared"),
        concat!("shared/", "KONG-COMPAT"),
        concat!("DESIGN", ".md"),
        concat!("STYLE", ".md"),
    ];
    let mut files = Vec::new();
    repository_files(&root(), &mut files);
    let mut problems = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue; // not text
        };
        for needle in outside {
            if text.contains(needle) {
                problems.push(format!("{} mentions {needle}", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_link_reader_finds_links_and_anchors_as_github_does() {
    assert_eq!(
        link_targets("a [b](c.md) and [d](e/#f)\n```\n[x](not-a-link)\n```\n"),
        ["c.md", "e/#f"]
    );
    assert_eq!(
        anchor_of(" The article's flow, against `make run`"),
        "the-articles-flow-against-make-run"
    );
    assert_eq!(
        anchor_of(" Injected pods' certificates"),
        "injected-pods-certificates"
    );
    assert_eq!(inside_repository(Path::new("docs/../../x")), None);
    assert!(broken(&root().join("README.md"), "docs/NOT-THERE.md").is_some());
    assert!(broken(&root().join("README.md"), "#no-such-heading").is_some());
    assert!(broken(&root().join("README.md"), "#limits").is_none());
}
