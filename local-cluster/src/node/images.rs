//! The image → program table: which programs a container image provides when the local cluster
//! runs containers as processes on the host's filesystem. Pure: no I/O.
//!
//! An image reference is looked up by its repository alone: the tag and digest are ignored, and
//! Docker Hub's spellings (`docker.io/`, `docker.io/library/`, `index.docker.io/`, `library/`)
//! equal none, so `busybox:1.36` and `docker.io/library/busybox@sha256:…` are the same entry.

use std::fmt::Write as _;

/// Where the agent finds an image's programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Binaries built from this workspace, in the cargo target directory beside the agent.
    Workspace,
    /// Tools of the host, found on `PATH`.
    Host,
}

impl Location {
    /// A word for tables and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Workspace => "workspace",
            Location::Host => "host",
        }
    }
}

/// What an image provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    /// The image's `ENTRYPOINT`: run when a container gives no `command` (with its `args`).
    pub entrypoint: &'static [&'static str],
    /// Executables a container's `command` may name (its argv[0]); includes the entrypoint's.
    pub commands: &'static [&'static str],
    /// Where those executables are.
    pub location: Location,
    /// What the image is, for the README and messages.
    pub about: &'static str,
}

const BUSYBOX_COMMANDS: &[&str] = &[
    "sh", "sleep", "cat", "echo", "env", "ls", "true", "false", "printf", "test", "wget", "id",
    "hostname", "date", "mkdir", "touch", "rm", "grep", "head", "tail", "wc",
];

/// Every image the local cluster runs, by repository (no registry default, tag or digest).
pub const TABLE: &[(&str, Image)] = &[
    (
        "smidge/echo",
        Image {
            entrypoint: &["smidge-echo"],
            commands: &["smidge-echo"],
            location: Location::Workspace,
            about: "HTTP (PORT, 8080) answering with its name; TCP echo (ECHO_PORT, 7000)",
        },
    ),
    (
        "ghcr.io/smidge-mesh/echo",
        Image {
            entrypoint: &["smidge-echo"],
            commands: &["smidge-echo"],
            location: Location::Workspace,
            about: "the same as smidge/echo",
        },
    ),
    (
        "layer5/learn-layer5",
        Image {
            entrypoint: &["smidge-sample-app"],
            commands: &["smidge-sample-app"],
            location: Location::Workspace,
            about: "the SMI conformance sample app",
        },
    ),
    (
        "ghcr.io/smidge-mesh/sample-app",
        Image {
            entrypoint: &["smidge-sample-app"],
            commands: &["smidge-sample-app"],
            location: Location::Workspace,
            about: "the same as layer5/learn-layer5",
        },
    ),
    (
        "ghcr.io/smidge-mesh/smidge-controller",
        Image {
            entrypoint: &["smidge-controller"],
            commands: &["smidge-controller"],
            location: Location::Workspace,
            about: "smidge's controller",
        },
    ),
    (
        "ghcr.io/smidge-mesh/smidge-proxy",
        Image {
            entrypoint: &["smidge-proxy"],
            commands: &["smidge-proxy"],
            location: Location::Workspace,
            about: "smidge's proxy (args `init` or `run`)",
        },
    ),
    (
        "ghcr.io/smidge-mesh/smidge-cli",
        Image {
            entrypoint: &["smidge"],
            commands: &["smidge"],
            location: Location::Workspace,
            about: "smidge's command line",
        },
    ),
    (
        "busybox",
        Image {
            entrypoint: &["sh"],
            commands: BUSYBOX_COMMANDS,
            location: Location::Host,
            about: "the host's shell and core tools",
        },
    ),
    (
        "curlimages/curl",
        Image {
            entrypoint: &["curl"],
            commands: &["curl", "sh"],
            location: Location::Host,
            about: "the host's curl",
        },
    ),
    (
        "registry.k8s.io/pause",
        Image {
            entrypoint: &["sleep", "infinity"],
            commands: &["sleep"],
            location: Location::Host,
            about: "sleeps until stopped",
        },
    ),
];

/// The repository of an image reference: without tag, digest or Docker Hub's default prefixes.
pub fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag follows the last ':' unless that ':' belongs to a registry's port.
    let repo = match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    };
    let repo = ["docker.io/", "index.docker.io/"]
        .iter()
        .find_map(|p| repo.strip_prefix(p))
        .unwrap_or(repo);
    repo.strip_prefix("library/").unwrap_or(repo)
}

/// The table's entry for `image` (any tag, digest or Docker Hub spelling), if there is one.
pub fn lookup(image: &str) -> Option<&'static Image> {
    let repo = repository(image);
    TABLE.iter().find(|(name, _)| *name == repo).map(|(_, i)| i)
}

/// The table's executable for a container's argv[0] `name`: a command of the image, by name
/// or by an absolute path ending in it (`/bin/sh`, `/usr/local/bin/smidge-proxy`), since
/// images put their programs in various directories.
pub fn executable(image: &Image, name: &str) -> Option<&'static str> {
    let base = match name.strip_prefix('/') {
        Some(path) => path.rsplit('/').next().unwrap_or(path),
        None => name,
    };
    image.commands.iter().copied().find(|c| *c == base)
}

/// Whether argv[0] `name` is provided by `image` (see [`executable`]).
pub fn resolve_command(image: &Image, name: &str) -> bool {
    executable(image, name).is_some()
}

/// The repositories of the table, comma-separated, for messages.
pub fn names() -> String {
    TABLE.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// The table as Markdown, for the README.
pub fn markdown() -> String {
    let mut out = String::from(
        "| Image | Entrypoint | Commands | Programs from | What it is |\n|---|---|---|---|---|\n",
    );
    for (name, image) in TABLE {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "| `{name}` | `{}` | {} | {} | {} |",
            image.entrypoint.join(" "),
            image
                .commands
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            image.location.as_str(),
            image.about,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_digest_and_docker_hub_prefixes_are_ignored() {
        for (reference, repo) in [
            ("busybox", "busybox"),
            ("busybox:1.36", "busybox"),
            ("docker.io/busybox", "busybox"),
            ("docker.io/library/busybox:latest", "busybox"),
            ("index.docker.io/library/busybox", "busybox"),
            ("library/busybox", "busybox"),
            ("busybox@sha256:abcd", "busybox"),
            ("busybox:1.36@sha256:abcd", "busybox"),
            ("smidge/echo:1.2", "smidge/echo"),
            ("docker.io/smidge/echo", "smidge/echo"),
            ("localhost:5000/smidge/echo", "localhost:5000/smidge/echo"),
            (
                "localhost:5000/smidge/echo:v1",
                "localhost:5000/smidge/echo",
            ),
            ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause"),
        ] {
            assert_eq!(repository(reference), repo, "{reference}");
        }
        assert_eq!(lookup("docker.io/library/busybox"), lookup("busybox"));
        assert!(lookup("busybox").is_some());
        assert_eq!(
            lookup("ghcr.io/smidge-mesh/smidge-proxy:v0.1@sha256:00").map(|i| i.entrypoint),
            Some(&["smidge-proxy"][..])
        );
    }

    #[test]
    fn unknown_images_and_other_registries_are_not_in_the_table() {
        assert_eq!(lookup("nginx:1.27"), None);
        assert_eq!(lookup("quay.io/busybox"), None);
        assert_eq!(lookup("ghcr.io/smidge-mesh/smidge-proxyx"), None);
        assert_eq!(lookup(""), None);
    }

    #[test]
    fn smidges_images_map_to_the_workspace_binaries() {
        for (image, program) in [
            ("ghcr.io/smidge-mesh/smidge-controller", "smidge-controller"),
            ("ghcr.io/smidge-mesh/smidge-proxy", "smidge-proxy"),
            ("ghcr.io/smidge-mesh/smidge-cli", "smidge"),
            ("smidge/echo", "smidge-echo"),
            ("layer5/learn-layer5", "smidge-sample-app"),
        ] {
            let i = lookup(image).unwrap();
            assert_eq!(i.entrypoint, &[program], "{image}");
            assert_eq!(i.location, Location::Workspace, "{image}");
        }
        for image in ["busybox", "curlimages/curl", "registry.k8s.io/pause"] {
            assert_eq!(lookup(image).unwrap().location, Location::Host, "{image}");
        }
    }

    #[test]
    fn every_entrypoint_is_one_of_its_images_commands() {
        for (name, image) in TABLE {
            let first = image.entrypoint.first().expect(name);
            assert!(resolve_command(image, first), "{name}");
        }
    }

    #[test]
    fn commands_resolve_by_name_or_absolute_path() {
        let busybox = lookup("busybox").unwrap();
        assert_eq!(executable(busybox, "sh"), Some("sh"));
        assert_eq!(executable(busybox, "/bin/sh"), Some("sh"));
        assert_eq!(executable(busybox, "/usr/bin/sleep"), Some("sleep"));
        assert!(resolve_command(busybox, "wget"));
        assert!(!resolve_command(busybox, "python3"));
        assert!(
            !resolve_command(busybox, "bin/sh"),
            "relative paths are not names"
        );
        assert!(!resolve_command(busybox, ""));
        let curl = lookup("curlimages/curl").unwrap();
        assert!(resolve_command(curl, "curl") && resolve_command(curl, "sh"));
        assert!(!resolve_command(curl, "sleep"));
        let pause = lookup("registry.k8s.io/pause").unwrap();
        assert_eq!(pause.entrypoint, &["sleep", "infinity"]);
    }

    #[test]
    fn the_markdown_table_lists_every_image() {
        let md = markdown();
        assert_eq!(md.lines().count(), TABLE.len() + 2);
        assert!(md.contains("| `busybox` | `sh` |"));
        assert!(md.contains("`ghcr.io/smidge-mesh/smidge-proxy`"));
    }

    /// The README documents this very table (regenerate it with `SMIDGE_PRINT_IMAGES=1 cargo
    /// test -p smidge-local-cluster readme_lists`).
    #[test]
    fn the_readme_lists_the_image_table() {
        let md = markdown();
        if std::env::var_os("SMIDGE_PRINT_IMAGES").is_some() {
            println!("{md}");
        }
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&md),
            "README.md lacks the image table:\n{md}"
        );
    }
}
