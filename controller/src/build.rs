//! Building evaluated toplevels: one `nix build` for all hosts, then per-host results,
//! with each failure's message picked out of Nix's combined output.

use std::collections::BTreeMap;

use hostctl_nix::{Nix, NixError, Toplevel};
use hostctl_schemas::ids::{HostName, StorePath};

/// Builds every toplevel; a host's result is `Err(message)` if its output is not in the
/// store afterwards. A Nix failure that is not about a build (e.g. Nix missing) is `Err`.
pub async fn build_all(
    nix: &Nix,
    targets: &BTreeMap<HostName, Toplevel>,
) -> Result<BTreeMap<HostName, Result<(), String>>, NixError> {
    let mut drvs: Vec<StorePath> = targets.values().map(|t| t.drv_path.clone()).collect();
    drvs.sort();
    drvs.dedup();
    if drvs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let failure = match nix.build_outputs(&drvs).await {
        Ok(_) => None,
        Err(NixError::Failed { stderr_tail, .. }) => Some(stderr_tail),
        Err(e) => return Err(e),
    };
    let outs: Vec<StorePath> = targets.values().map(|t| t.out_path.clone()).collect();
    let invalid = nix.invalid_paths(&outs).await?;
    let log = failure.as_deref().unwrap_or("nix build succeeded but the output is missing");
    let mut results = BTreeMap::new();
    for (host, t) in targets {
        let result = if invalid.iter().any(|p| p == t.out_path.as_str()) {
            // Nix names the dependency that failed, not the toplevel: match its output
            // against the whole derivation closure. Only failed hosts pay for the query.
            let closure = nix.requisites(std::slice::from_ref(&t.drv_path)).await.unwrap_or_default();
            let mut drvs: Vec<&str> = closure.iter().map(String::as_str).filter(|p| p.ends_with(".drv")).collect();
            drvs.push(t.drv_path.as_str());
            Err(failure_for(log, &drvs))
        } else {
            Ok(())
        };
        results.insert(host.clone(), result);
    }
    Ok(results)
}

/// The parts of Nix's output about `drvs` (a host's derivation closure): each `error:`
/// block that names one of them. Falls back to the whole output so no failure is ever
/// reported without a message.
pub fn failure_for(log: &str, drvs: &[&str]) -> String {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in log.lines() {
        match blocks.last_mut() {
            Some(block) if !line.starts_with("error:") => block.push(line),
            _ => blocks.push(vec![line]),
        }
    }
    let mine: Vec<String> =
        blocks.into_iter().filter(|b| b.iter().any(|l| drvs.iter().any(|d| l.contains(d)))).map(|b| b.join("\n")).collect();
    if mine.is_empty() {
        log.to_owned()
    } else {
        mine.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_blocks_naming_the_derivation() {
        let a: StorePath = "/nix/store/mh3rz2qzm0lrcxk22g2b1kifak7q2nj9-nixos-system-a.drv".parse().unwrap();
        let b: StorePath = "/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-nixos-system-b.drv".parse().unwrap();
        let log = format!(
            "building '{a}'...\nerror: builder for '{a}' failed with exit code 1;\n       last 2 log lines:\n       > oops\nerror: a 'aarch64-linux' with features {{}} is required to build '{b}', but I am a 'x86_64-linux'\nerror: build of '{a}', '{b}' failed"
        );
        let for_a = failure_for(&log, &[a.as_str()]);
        assert!(for_a.contains("> oops"), "{for_a}");
        assert!(!for_a.contains("aarch64"), "{for_a}");
        let for_b = failure_for(&log, &[b.as_str()]);
        assert!(for_b.contains("aarch64-linux"), "{for_b}");
        assert!(!for_b.contains("oops"), "{for_b}");
        assert_eq!(failure_for("something else", &["/nix/store/0-c.drv"]), "something else");
    }
}
