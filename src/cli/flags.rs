//! The library's errors name library options (`LoadOptions::allow_non_finite`,
//! `HubOptions::offline`, the `key` argument of `convert_pth`); on the command line the same advice
//! is a flag. [`hints`] gives the flag for each option an error names, as lines added to the
//! message where the CLI reports it ([`super::error_chain`]).

use resnet_zoo::hub::{HubError, LoadError};

/// A library phrase and the command-line spelling of the same thing.
const FLAGS: &[(&str, &str)] = &[
    ("LoadOptions::allow_non_finite", "--allow-non-finite"),
    ("HubOptions::offline", "--offline"),
    ("`key` argument of read_pth", "--key NAME"),
    ("LoadOptions::strip_prefix", "--strip-prefix PREFIX"),
    (
        "registry::all() lists every name",
        "`resnet-zoo list --pretrained` lists every name",
    ),
];

/// `(on the command line: X)` lines for the library options that `message` (the whole report)
/// names, and for the typed errors in `e`'s chain whose advice needs its values (the file to
/// convert, the architecture that matches). Lines `message` already holds are left out, so a
/// message reported twice gains them once.
pub fn hints(e: &(dyn std::error::Error + 'static), message: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut source = Some(e);
    while let Some(cause) = source {
        let load = match cause.downcast_ref::<HubError>() {
            Some(HubError::Load(inner)) => Some(inner.as_ref()),
            _ => cause.downcast_ref::<LoadError>(),
        };
        match load {
            Some(LoadError::PyTorchCheckpoint { path, .. }) => out.push(format!(
                "resnet-zoo convert {} OUT.safetensors",
                path.display()
            )),
            Some(LoadError::Mismatch(report))
                if message.contains("ResNetConfig::preset")
                    && !report.matching_presets.is_empty() =>
            {
                out.push(format!(
                    "--arch {}",
                    report.matching_presets.join(" or --arch ")
                ));
            }
            _ => {}
        }
        source = cause.source();
    }
    for (phrase, flag) in FLAGS {
        if message.contains(phrase) {
            out.push((*flag).to_string());
        }
    }
    out.into_iter()
        .map(|flag| format!("(on the command line: {flag})"))
        .filter(|line| !message.contains(line.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use resnet_zoo::hub::{HubError, LoadError, MismatchReport};

    fn report(e: impl std::error::Error + Send + Sync + 'static) -> String {
        crate::cli::error_chain(&e)
    }

    #[test]
    fn library_options_gain_their_flags() {
        let non_finite = LoadError::NonFinite {
            path: PathBuf::from("w.safetensors"),
            tensors: vec![("fc.bias".into(), 1)],
        };
        let text = report(non_finite);
        assert!(text.contains("LoadOptions::allow_non_finite"), "{text}");
        assert!(
            text.ends_with("\n(on the command line: --allow-non-finite)"),
            "{text}"
        );

        let offline = HubError::NotCached {
            target: "o/n/f@main".into(),
            cache: PathBuf::from("/cache"),
        };
        let text = report(offline);
        assert!(text.contains("HubOptions::offline"), "{text}");
        assert!(text.contains("(on the command line: --offline)"), "{text}");

        let mismatch = LoadError::Mismatch(Box::new(MismatchReport {
            path: PathBuf::from("w.safetensors"),
            arch: "resnet34".into(),
            matching_presets: vec!["resnet18".into()],
            ..MismatchReport::default()
        }));
        let text = report(HubError::from(mismatch));
        assert!(text.contains("ResNetConfig::preset"), "{text}");
        assert!(
            text.contains("(on the command line: --arch resnet18)"),
            "{text}"
        );

        let pth = LoadError::PyTorchCheckpoint {
            path: PathBuf::from("w.pth"),
            what: "a PyTorch .pth checkpoint",
        };
        let text = report(pth);
        assert!(
            text.contains("(on the command line: resnet-zoo convert w.pth OUT.safetensors)"),
            "{text}"
        );
    }

    #[test]
    fn a_message_reported_twice_gains_a_flag_once() {
        let e = LoadError::NonFinite {
            path: PathBuf::from("w.safetensors"),
            tensors: vec![("fc.bias".into(), 1)],
        };
        let once = report(e);
        let twice = crate::cli::error_chain(&crate::cli::Usage(once.clone()));
        assert_eq!(once, twice);
    }
}
