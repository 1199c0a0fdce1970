//! The map of top-level modules stays a tree: no module imports from one that imports it back,
//! and `balance` (backends' live state, selection, health) stands below the front door, the LB
//! module and admin, importing none of them. Read from the `crate::` paths in `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::<module>` paths each top-level module names, by module.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let first = rel.components().next().expect("a component");
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("source readable");
            let named = map.entry(module.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let target = &rest[..end];
                if !target.is_empty() && target != module {
                    named.insert(target.to_string());
                }
            }
        }
    }
    map
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let map = imports();
    assert!(map.len() >= 10, "read only {:?}", map.keys());
    // Peel off modules that import nothing left; whatever cannot be peeled sits on a cycle.
    let mut left = map.clone();
    loop {
        let leaves: Vec<String> = left
            .iter()
            .filter(|(_, targets)| targets.iter().all(|t| !left.contains_key(t)))
            .map(|(m, _)| m.clone())
            .collect();
        if leaves.is_empty() {
            break;
        }
        for leaf in leaves {
            left.remove(&leaf);
        }
    }
    assert!(
        left.is_empty(),
        "modules on or above an import cycle: {left:?}"
    );
}

#[test]
fn balance_stands_below_the_front_door_lb_module_and_admin() {
    let map = imports();
    let balance = map.get("balance").expect("src/balance");
    for above in [
        "proxy", "lbmodule", "admin", "app", "snapshot", "reload", "demo", "sim",
    ] {
        assert!(
            !balance.contains(above),
            "balance imports {above}: {balance:?}"
        );
    }
}
