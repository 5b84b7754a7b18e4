//! The house rules of `src/`, checked: every module sits on a floor of ARCHITECTURE.md's table, no
//! `use crate::` (or `crate::` path) reaches a higher floor, and no files import each other in a
//! circle. Unit tests (`#[cfg(test)] mod tests`) do not shape the layers and are left out, as is
//! `main.rs`, which only calls `cli`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Top-level module -> floor, from the table in ARCHITECTURE.md (`| 3 | commands | `commands` | ...`).
fn floors(architecture: &str) -> BTreeMap<String, u32> {
    let mut floors = BTreeMap::new();
    for line in architecture.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, floor, _, modules, ..] = cells.as_slice() else {
            continue;
        };
        let Ok(floor) = floor.parse::<u32>() else {
            continue;
        };
        for module in modules.split(',') {
            let name = module.trim().trim_matches('`');
            assert!(
                !name.is_empty(),
                "an empty module name in the floor table: {line}"
            );
            assert!(
                floors.insert(name.to_string(), floor).is_none(),
                "{name} is on two floors"
            );
        }
    }
    floors
}

/// Every `.rs` file under `src`, as its module path (`src/cluster/mod.rs` -> [cluster]).
fn files(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut module: Module = rel
                    .iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod") {
                    module.pop();
                }
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out.retain(|m, _| !(m.len() == 1 && (m[0] == "main" || m[0] == "lib")));
    out
}

/// The code of a file that shapes the layers: comments and unit tests removed.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    // Block comments, then line comments.
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        rest = rest[start..]
            .find("*/")
            .map(|end| &rest[start + end + 2..])
            .unwrap_or("");
    }
    out.push_str(rest);
    let out: String = out
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    match out.find("#[cfg(test)]\nmod tests") {
        Some(i) => out[..i].to_string(),
        None => out,
    }
}

/// `a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e].
fn expand(body: &str) -> Vec<String> {
    let (mut items, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for ch in body.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            items.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    items.push(cur);
    let mut out = Vec::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        match (item.find("::{"), item.ends_with('}')) {
            (Some(i), true) => {
                for inner in expand(&item[i + 3..item.len() - 1]) {
                    out.push(format!("{}::{inner}", &item[..i]));
                }
            }
            _ => out.push(item.split(" as ").next().unwrap().trim().to_string()),
        }
    }
    out
}

/// The paths a file names through `crate::` and `super::`, with which of the two.
fn paths(code: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for anchor in ["crate", "super"] {
        let kind: &'static str = anchor;
        let braced = format!("{anchor}::{{");
        let mut rest = code;
        while let Some(i) = rest.find(&braced) {
            let after = &rest[i + braced.len()..];
            let (mut depth, mut end) = (1, 0);
            for (j, ch) in after.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = j;
                    break;
                }
            }
            out.extend(expand(&after[..end]).into_iter().map(|p| (kind, p)));
            rest = &after[end..];
        }
        let plain = format!("{anchor}::");
        let mut rest = code;
        while let Some(i) = rest.find(&plain) {
            let before = rest[..i].chars().last();
            let after = &rest[i + plain.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') || after.starts_with('{') {
                continue;
            }
            let path: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push((kind, path));
        }
    }
    out
}

/// The file a path lands in: the longest module prefix that is a file.
fn resolve(files: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| files.contains_key(m))
}

/// Every file's imports of other files; a module and its own children are one family.
fn imports(files: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges = BTreeMap::new();
    for (module, path) in files {
        let text = std::fs::read_to_string(path).unwrap();
        let is_mod = path.file_name().is_some_and(|f| f == "mod.rs");
        let parent: Module = module[..module.len() - 1].to_vec();
        let mut targets = BTreeSet::new();
        for (kind, p) in paths(&code(&text)) {
            let segs: Module = p
                .split("::")
                .filter(|s| !s.is_empty() && *s != "self")
                .map(str::to_string)
                .collect();
            let full: Module = match kind {
                "crate" => segs,
                _ if is_mod => module[..module.len().saturating_sub(1)]
                    .iter()
                    .cloned()
                    .chain(segs)
                    .collect(),
                _ => parent.iter().cloned().chain(segs).collect(),
            };
            let Some(target) = resolve(files, &full) else {
                continue;
            };
            let family = target.starts_with(module) || module.starts_with(&target);
            if !family {
                targets.insert(target);
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

/// Strongly connected components of more than one file.
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        found: Vec<Vec<Module>>,
    }
    impl Tarjan<'_> {
        fn strong(&mut self, v: &Module) {
            let n = self.index.len();
            self.index.insert(v.clone(), n);
            self.low.insert(v.clone(), n);
            self.stack.push(v.clone());
            self.on.insert(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.strong(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v.clone(), low);
                } else if self.on.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on.remove(&w);
                    let done = &w == v;
                    component.push(w);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.strong(v);
        }
    }
    t.found
}

#[test]
fn every_import_points_down_and_none_closes_a_circle() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md exists");
    let floors = floors(&architecture);
    let files = files(&root().join("src"));
    let top: BTreeSet<String> = files.keys().map(|m| m[0].clone()).collect();
    let unplaced: Vec<&String> = top.iter().filter(|m| !floors.contains_key(*m)).collect();
    assert!(
        unplaced.is_empty(),
        "modules on no floor of ARCHITECTURE.md's table (place them there): {unplaced:?}"
    );
    let gone: Vec<&String> = floors.keys().filter(|m| !top.contains(*m)).collect();
    assert!(
        gone.is_empty(),
        "ARCHITECTURE.md names modules src/ does not have: {gone:?}"
    );

    let edges = imports(&files);
    let show = |m: &Module| files[m].strip_prefix(root()).unwrap().display().to_string();
    let mut upward = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            let (f, t) = (floors[&from[0]], floors[&to[0]]);
            if t > f {
                upward.push(format!(
                    "{} (floor {f}) imports {} (floor {t})",
                    show(from),
                    show(to)
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up:\n  {}",
        upward.join("\n  ")
    );
    let file_circles: Vec<String> = circles(&edges)
        .iter()
        .map(|c| c.iter().map(show).collect::<Vec<_>>().join(", "))
        .collect();
    assert!(
        file_circles.is_empty(),
        "files that import each other in a circle:\n  {}",
        file_circles.join("\n  ")
    );
    // The same between top-level modules: a re-export (`cluster::SlotState` from `cluster/state.rs`)
    // can hide a circle between two directories from the file graph.
    let mut modules: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, targets) in &edges {
        let entry = modules.entry(vec![from[0].clone()]).or_default();
        entry.extend(
            targets
                .iter()
                .map(|t| vec![t[0].clone()])
                .filter(|t| t[0] != from[0]),
        );
    }
    let module_circles: Vec<String> = circles(&modules)
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| m[0].clone())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    assert!(
        module_circles.is_empty(),
        "modules that import each other in a circle:\n  {}",
        module_circles.join("\n  ")
    );
}

#[test]
fn the_checker_sees_uses_paths_and_families() {
    assert_eq!(
        expand("a::{b, c::{d, e as f}}, g"),
        ["a::b", "a::c::d", "a::c::e", "g"].map(String::from)
    );
    let found = paths(&code(
        "use crate::{vocab::Slot, cluster::{Cluster, state::X}};\nuse super::decide::plan; // crate::output::x\nfn f() { crate::term::table(); }\n#[cfg(test)]\nmod tests { use crate::cli::Cli; }",
    ));
    let found: Vec<String> = found.into_iter().map(|(k, p)| format!("{k}:{p}")).collect();
    for want in [
        "crate:vocab::Slot",
        "crate:cluster::Cluster",
        "crate:cluster::state::X",
        "super:decide::plan",
        "crate:term::table",
    ] {
        assert!(found.contains(&want.to_string()), "{want} in {found:?}");
    }
    assert!(
        !found
            .iter()
            .any(|p| p.contains("output") || p.contains("cli")),
        "{found:?}"
    );
    let floors = floors("| 4 | surface | `cli`, `output` | x |\n| 0 | words | `vocab` | y |\n| floor | name | modules | what |");
    assert_eq!(floors.get("output"), Some(&4));
    assert_eq!(floors.get("vocab"), Some(&0));
    assert_eq!(floors.len(), 3);
}
