//! The operator image: what `make image` builds (scripts/image.sh: an OCI image layout made by umoci from Debian 12
//! packages and the release binary, no container engine) and its agreement with the `Dockerfile` (kept for users with
//! Docker) and the chart.
//!
//! - `dockerfile_keeps_the_project_rules` reads the Dockerfile alone: the rules of this project hadolint cannot know
//!   (built `--locked` without the simulator, the chart's user, the exec-form entrypoint, the metrics port).
//! - `image_config_agrees_with_the_dockerfile` reads the layout: blobs match their digests, the config's user,
//!   entrypoint, port and labels are the Dockerfile's, and the binary came from the Dockerfile's cargo build.
//! - `archive_is_the_layout_tagged_as_the_chart_pulls_it`: the `.oci.tar` next to the layout is the same image, with
//!   docker-save's `manifest.json` tagged as the chart's default image.
//! - `image_filesystem_has_no_shell_and_runs_the_binary` unpacks the layers: no shell and no other program, owners
//!   and modes, the nonroot user, the CA bundle; then runs the binary taken out of the image with the image's own
//!   loader and libraries (and, where user namespaces are allowed, chrooted into the unpacked image).
//!
//! The image is `HPCC_IMAGE_LAYOUT` (an OCI layout directory) when set, otherwise what `scripts/image.sh` builds (a
//! release build the first time; a few seconds when nothing changed).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const USER: &str = "65532:65532";
const ENTRYPOINT: [&str; 2] = ["/hpc-cache-operator", "run"];
/// Names of shells and multi-call binaries that must not be anywhere in the image.
const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "busybox", "toybox"];

// ---------------------------------------------------------------------------------------------------------------
// The Dockerfile

/// The instructions of one `FROM` stage, continuation lines joined, comments dropped.
struct Stage {
    from: String,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions.iter().filter(|(k, _)| k == keyword).map(|(_, v)| v.as_str()).collect()
    }

    fn last(&self, keyword: &str) -> &str {
        self.all(keyword).last().copied().unwrap_or_else(|| panic!("Dockerfile stage {} has no {keyword}", self.from))
    }
}

fn dockerfile() -> Vec<Stage> {
    let text = std::fs::read_to_string(format!("{REPO}/Dockerfile")).expect("reading Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.is_empty()) {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (keyword, rest) = (keyword.to_ascii_uppercase(), rest.trim().to_string());
        if keyword == "FROM" {
            stages.push(Stage { from: rest, instructions: Vec::new() });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, rest));
        }
    }
    assert!(stages.len() >= 2, "the Dockerfile should be a builder stage and a runtime stage");
    stages
}

/// `cargo build ...` of the builder's RUN, as words, up to the next `&&`.
fn dockerfile_cargo_build(stages: &[Stage]) -> Vec<String> {
    let runs: Vec<&str> = stages.iter().flat_map(|s| s.all("RUN")).filter(|r| r.contains("cargo build")).collect();
    assert_eq!(runs.len(), 1, "one RUN with `cargo build` in the Dockerfile: {runs:?}");
    let words: Vec<&str> = runs[0].split_whitespace().collect();
    let start = words.windows(2).position(|w| w == ["cargo", "build"]).expect("cargo build");
    words[start..].iter().take_while(|w| **w != "&&").map(|w| w.to_string()).collect()
}

/// `LABEL k="v" k2="v2"` pairs (quoted or bare values).
fn dockerfile_labels(stage: &Stage) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for spec in stage.all("LABEL") {
        let mut rest = spec.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=').unwrap_or_else(|| panic!("LABEL without `=`: {spec}"));
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"').unwrap_or_else(|| panic!("unclosed quote in LABEL {spec}"));
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
            };
            labels.insert(key.trim().to_string(), value.to_string());
            rest = after.trim_start();
        }
    }
    labels
}

fn chart_values() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(format!("{REPO}/charts/hpc-cache-operator/values.yaml")).expect("values.yaml");
    serde_yaml_ng::from_str(&text).expect("parsing values.yaml")
}

#[test]
fn dockerfile_keeps_the_project_rules() {
    let stages = dockerfile();
    let runtime = stages.last().expect("runtime stage");

    let build = dockerfile_cargo_build(&stages);
    for flag in ["--release", "--locked", "--no-default-features"] {
        assert!(build.iter().any(|w| w == flag), "the Dockerfile's cargo build needs {flag}: {build:?}");
    }
    assert!(
        build.windows(2).any(|w| w == ["--bin", "hpc-cache-operator"]),
        "the Dockerfile builds the hpc-cache-operator binary: {build:?}"
    );
    assert!(!build.iter().any(|w| w.starts_with("--features") || w == "--all-features"), "no features: {build:?}");

    // The chart runs the pod as this user (runAsNonRoot needs a numeric one) and probes this port.
    let values = chart_values();
    let psc = &values["podSecurityContext"];
    let chart_user = format!(
        "{}:{}",
        psc["runAsUser"].as_u64().expect("runAsUser"),
        psc["runAsGroup"].as_u64().expect("runAsGroup")
    );
    assert_eq!(runtime.last("USER"), chart_user, "the Dockerfile's USER is the chart's runAsUser:runAsGroup");
    assert_eq!(chart_user, USER);
    let port = values["metrics"]["port"].as_u64().expect("metrics.port");
    assert_eq!(runtime.all("EXPOSE"), [port.to_string()], "the Dockerfile exposes the chart's metrics port");

    // Exec form, so that the chart's `args` (extraArgs) are the operator's and signals reach it (there is no shell).
    let entrypoint: Vec<String> =
        serde_json::from_str(runtime.last("ENTRYPOINT")).expect("ENTRYPOINT in exec (JSON array) form");
    assert_eq!(entrypoint, ENTRYPOINT);
    assert!(runtime.all("CMD").is_empty() && runtime.all("SHELL").is_empty(), "no CMD or SHELL in the runtime stage");
    assert!(
        runtime.from.contains("distroless/cc-debian") && runtime.from.ends_with(":nonroot"),
        "the runtime is distroless cc, nonroot: {}",
        runtime.from
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The image

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The OCI layout directory: `HPCC_IMAGE_LAYOUT`, or what `scripts/image.sh` builds (once per test process).
fn layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("HPCC_IMAGE_LAYOUT") {
            return PathBuf::from(dir);
        }
        let out = run(Command::new(format!("{REPO}/scripts/image.sh")).stderr(Stdio::inherit()));
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        PathBuf::from(format!("{REPO}/target/image/oci"))
    })
}

fn blob_path(digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("a sha256 digest: {digest}"));
    layout().join("blobs/sha256").join(hex)
}

fn json_blob(digest: &str) -> Value {
    serde_json::from_slice(&std::fs::read(blob_path(digest)).expect("reading blob")).expect("JSON blob")
}

/// The manifest tagged with the crate version, and its config.
fn manifest_and_config() -> (Value, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout().join("index.json")).expect("index.json")).expect("index JSON");
    let tagged: Vec<&Value> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == VERSION)
        .collect();
    assert_eq!(tagged.len(), 1, "one manifest tagged {VERSION} in {}", layout().display());
    assert_eq!(tagged[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let manifest = json_blob(tagged[0]["digest"].as_str().expect("digest"));
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let config = json_blob(manifest["config"]["digest"].as_str().expect("config digest"));
    (manifest, config)
}

fn layer_blobs(manifest: &Value) -> Vec<PathBuf> {
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(!layers.is_empty(), "no layers");
    layers
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
            blob_path(l["digest"].as_str().expect("layer digest"))
        })
        .collect()
}

fn sha256_of(mut producer: Command) -> String {
    let mut child = producer.stdout(Stdio::piped()).spawn().expect("spawning the producer");
    let out = Command::new("sha256sum")
        .stdin(child.stdout.take().expect("piped stdout"))
        .output()
        .expect("running sha256sum");
    assert!(child.wait().expect("producer").success() && out.status.success(), "{producer:?} | sha256sum failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    format!("sha256:{}", text.split_whitespace().next().expect("a hash"))
}

#[test]
fn image_config_agrees_with_the_dockerfile() {
    let (manifest, config) = manifest_and_config();

    // Every blob is what its name says (what a registry and a runtime check), and the config's diff_ids are the
    // uncompressed layers.
    let blobs = layout().join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs).expect("blobs") {
        let path = entry.expect("blob").path();
        let mut cat = Command::new("cat");
        cat.arg(&path);
        let name = path.file_name().expect("name").to_string_lossy();
        assert_eq!(sha256_of(cat), format!("sha256:{name}"), "blob {} is corrupt", path.display());
    }
    let diff_ids: Vec<&str> =
        config["rootfs"]["diff_ids"].as_array().expect("diff_ids").iter().map(|d| d.as_str().expect("id")).collect();
    let layers = layer_blobs(&manifest);
    assert_eq!(diff_ids.len(), layers.len(), "one diff_id per layer");
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let mut gunzip = Command::new("gzip");
        gunzip.arg("-dc").arg(layer);
        assert_eq!(sha256_of(gunzip), *diff_id, "diff_id of {}", layer.display());
    }

    assert_eq!(config["os"], "linux");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(config["architecture"], arch);

    let stages = dockerfile();
    let runtime = stages.last().expect("runtime stage");
    let c = &config["config"];
    assert_eq!(c["User"], runtime.last("USER"), "image user = Dockerfile USER");
    assert_eq!(c["User"], USER);
    let entrypoint: Value = serde_json::from_str(runtime.last("ENTRYPOINT")).expect("ENTRYPOINT JSON");
    assert_eq!(c["Entrypoint"], entrypoint, "image entrypoint = Dockerfile ENTRYPOINT");
    assert!(c["Cmd"].is_null(), "no Cmd: the chart's args go to `run`: {}", c["Cmd"]);
    let ports: Vec<String> = runtime.all("EXPOSE").iter().map(|p| format!("{p}/tcp")).collect();
    let image_ports: Vec<&String> = c["ExposedPorts"].as_object().expect("ExposedPorts").keys().collect();
    assert_eq!(image_ports, ports.iter().collect::<Vec<_>>(), "image ports = Dockerfile EXPOSE");
    let env: Vec<&str> = c["Env"].as_array().expect("Env").iter().map(|e| e.as_str().expect("env")).collect();
    assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"), "distroless's SSL_CERT_FILE: {env:?}");

    let labels = &c["Labels"];
    for (key, value) in dockerfile_labels(runtime) {
        assert_eq!(labels[&key], value.as_str(), "label {key}: the image's differs from the Dockerfile's");
    }
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert!(labels["org.opencontainers.image.revision"].as_str().is_some_and(|r| r.len() >= 40), "revision label");
    assert_eq!(labels["org.opencontainers.image.created"], config["created"]);
    // The binary in the image came from the Dockerfile's own cargo build (so: no simulator, --locked).
    let build: Vec<&str> = labels["io.hpccache.image.build"].as_str().expect("build label").split(' ').collect();
    assert_eq!(build, dockerfile_cargo_build(&stages), "image build = the Dockerfile's cargo build");
    let packages = labels["io.hpccache.image.packages"].as_str().expect("packages label");
    for pkg in ["libc6=", "libgcc-s1=", "ca-certificates="] {
        assert!(packages.split(' ').any(|p| p.starts_with(pkg)), "packages label names {pkg}: {packages}");
    }
}

#[test]
fn archive_is_the_layout_tagged_as_the_chart_pulls_it() {
    let (manifest, _) = manifest_and_config();
    let archive = layout().with_file_name(format!("hpc-cache-operator-{VERSION}.oci.tar"));
    assert!(archive.is_file(), "{} is missing", archive.display());
    let member = |name: &str| -> Value {
        let out = run(Command::new("tar").arg("-xOf").arg(&archive).arg(name));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name} in the archive: {e}"))
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout().join("index.json")).expect("index")).expect("json");
    assert_eq!(member("index.json"), index, "the archive's index.json is the layout's");

    // docker-save's manifest.json (docker load, podman load, skopeo docker-archive:): the same config and layers,
    // tagged with the chart's default image (image.repository, the tag defaulting to appVersion = the crate version).
    let docker = member("manifest.json");
    let path =
        |d: &Value| format!("blobs/sha256/{}", d["digest"].as_str().expect("digest").trim_start_matches("sha256:"));
    assert_eq!(docker[0]["Config"], path(&manifest["config"]));
    let layers: Vec<String> = manifest["layers"].as_array().expect("layers").iter().map(path).collect();
    assert_eq!(docker[0]["Layers"], serde_json::json!(layers));
    let chart: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{REPO}/charts/hpc-cache-operator/Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("parsing Chart.yaml");
    assert_eq!(chart["appVersion"].as_str(), Some(VERSION), "the chart's appVersion is the crate version");
    let repository = chart_values()["image"]["repository"].as_str().expect("image.repository").to_string();
    assert_eq!(docker[0]["RepoTags"], serde_json::json!([format!("{repository}:{VERSION}")]));
}

// ---------------------------------------------------------------------------------------------------------------
// The image's files and its binary

/// One `tar -tv` line: mode string, `uid/gid`, path (directories without the trailing `/`).
struct Entry {
    mode: String,
    owner: String,
    path: String,
}

fn listing(layer: &Path) -> Vec<Entry> {
    let out = run(Command::new("tar").arg("--numeric-owner").arg("-tvzf").arg(layer));
    String::from_utf8(out.stdout)
        .expect("utf-8 listing")
        .lines()
        .map(|line| {
            // mode uid/gid size date time path [-> target] (no spaces in the image's paths)
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "a tar -tv line: {line}");
            let path = fields[5].trim_end_matches('/').to_string();
            Entry { mode: fields[0].to_string(), owner: fields[1].to_string(), path }
        })
        .collect()
}

/// `path` inside `root`, following symlinks as the image would (absolute targets from the image's root).
fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = path.split('/').filter(|p| !p.is_empty()).rev().map(String::from).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => resolved.push(&part),
        }
        if let Ok(target) = std::fs::read_link(root.join(&resolved)) {
            hops += 1;
            assert!(hops < 40, "symlink loop at {path}");
            resolved.pop();
            if target.is_absolute() {
                resolved = PathBuf::new();
            }
            for c in target.components().rev() {
                if let Component::Normal(p) = c {
                    pending.push(p.to_string_lossy().into_owned());
                } else if c == Component::ParentDir {
                    pending.push("..".into());
                }
            }
        }
    }
    root.join(resolved)
}

/// The ELF program interpreter (PT_INTERP) of a 64-bit little-endian executable.
fn elf_interpreter(binary: &Path) -> String {
    let elf = std::fs::read(binary).expect("reading the binary");
    assert!(elf.starts_with(b"\x7fELF\x02\x01"), "{} is not a 64-bit little-endian ELF", binary.display());
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().expect("2 bytes")) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32::from_le_bytes(elf[ph..ph + 4].try_into().expect("4 bytes")) == 3 {
            let (offset, size) = (u64_at(ph + 8), u64_at(ph + 0x20));
            return String::from_utf8(elf[offset..offset + size].to_vec())
                .expect("utf-8")
                .trim_end_matches('\0')
                .into();
        }
    }
    panic!("{} has no program interpreter (a static binary?)", binary.display());
}

#[test]
fn image_filesystem_has_no_shell_and_runs_the_binary() {
    let (manifest, config) = manifest_and_config();
    let layers = layer_blobs(&manifest);
    let entries: Vec<Entry> = layers.iter().flat_map(|l| listing(l)).collect();

    for e in &entries {
        let name = e.path.rsplit('/').next().unwrap_or_default();
        assert!(!SHELLS.contains(&name), "a shell in the image: {}", e.path);
        assert!(!name.starts_with(".wh."), "a whiteout in the image: {}", e.path);
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "usr/local", "usr/libexec"] {
            assert!(e.path != dir && !e.path.starts_with(&format!("{dir}/")), "programs' directory {}", e.path);
        }
        assert!(!e.mode[1..].contains(['s', 'S']), "setuid/setgid {} {}", e.mode, e.path);
        // The only programs: the operator, and shared objects (the loader and libc are executable).
        if e.mode.starts_with('-') && e.mode.contains('x') {
            assert!(e.path == "hpc-cache-operator" || e.path.contains(".so"), "a program in the image: {}", e.path);
        }
        let owner = if e.path == "home/nonroot" { USER.replace(':', "/") } else { "0/0".into() };
        assert_eq!(e.owner, owner, "owner of {}", e.path);
    }
    let mode_of = |path: &str| {
        let e = entries.iter().rfind(|e| e.path == path).unwrap_or_else(|| panic!("{path} is not in the image"));
        e.mode.clone()
    };
    assert_eq!(mode_of("hpc-cache-operator"), "-rwxr-xr-x");
    assert_eq!(mode_of("tmp"), "drwxrwxrwt");
    assert_eq!(mode_of("home/nonroot"), "drwx------");

    // Unpack (layers in order) and look at the files.
    let root_dir = tempfile::tempdir().expect("tempdir");
    let root = root_dir.path();
    for layer in &layers {
        run(Command::new("tar").arg("-xzf").arg(layer).arg("-C").arg(root));
    }
    let read = |p: &str| std::fs::read_to_string(resolve_in(root, p)).unwrap_or_else(|e| panic!("reading {p}: {e}"));
    let (uid, gid) = USER.split_once(':').expect("uid:gid");
    assert!(
        read("/etc/passwd").lines().any(|l| l.starts_with(&format!("nonroot:x:{uid}:{gid}:"))),
        "nonroot {uid} in /etc/passwd"
    );
    assert!(read("/etc/group").lines().any(|l| l == format!("nonroot:x:{gid}:")), "nonroot {gid} in /etc/group");
    assert!(read("/etc/passwd").lines().all(|l| l.ends_with(":/sbin/nologin")), "no login shells");
    let os_release = read("/etc/os-release");
    assert!(os_release.contains("ID=debian"), "a Debian base: {os_release}");
    // The Dockerfile's runtime is distroless cc-debianNN: the same Debian release.
    let stages = dockerfile();
    let from = &stages.last().expect("runtime").from;
    let debian = from.split("cc-debian").nth(1).and_then(|r| r.split(':').next()).expect("cc-debianNN in FROM");
    assert!(os_release.contains(&format!("VERSION_ID=\"{debian}\"")), "Debian {debian} like the Dockerfile's base");
    // The Azure client's TLS verifier uses the system store (reqwest's rustls-platform-verifier): a CA bundle where
    // SSL_CERT_FILE says.
    let bundle = read("/etc/ssl/certs/ca-certificates.crt");
    let certs = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certs > 100, "the CA bundle holds {certs} certificates");
    let env = config["config"]["Env"].as_array().expect("Env");
    assert!(env.iter().any(|e| e == "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"));

    // The binary taken out of the image, run by the image's loader with the image's libraries only.
    let binary = root.join("hpc-cache-operator");
    let loader = resolve_in(root, &elf_interpreter(&binary));
    assert!(loader.is_file(), "the binary's loader {} is not in the image", elf_interpreter(&binary));
    let libdir = loader.parent().expect("loader dir");
    let multiarch = libdir.file_name().expect("multiarch dir").to_string_lossy().into_owned();
    let search = [libdir.to_path_buf(), root.join("usr/lib").join(&multiarch), root.join("lib"), root.join("usr/lib")];
    let library_path = std::env::join_paths(&search).expect("library path");
    let in_image = |args: &[&str]| {
        let mut cmd = Command::new(&loader);
        cmd.arg("--inhibit-cache").arg("--library-path").arg(&library_path).arg(&binary).args(args);
        cmd.env_clear().stdin(Stdio::null()).output().expect("running the image's binary")
    };
    let mut list = Command::new(&loader);
    list.arg("--inhibit-cache").arg("--library-path").arg(&library_path).arg("--list").arg(&binary);
    let libs = String::from_utf8(run(&mut list).stdout).expect("utf-8");
    for line in libs.lines().filter(|l| l.contains("=>")) {
        let path = line.split("=>").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default();
        assert!(Path::new(path).starts_with(root), "a library from outside the image: {line}");
    }

    let version = in_image(&["version"]);
    assert!(version.status.success(), "version: {version:?}");
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("hpc-cache-operator {VERSION}"));
    let help = in_image(&["--help"]);
    assert!(help.status.success(), "--help: {help:?}");
    let help = String::from_utf8_lossy(&help.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for command in ["run", "crd", "version"] {
        assert!(commands.contains(&command), "`{command}` in --help: {commands:?}");
    }
    assert!(!commands.contains(&"simulate"), "the image's binary has the simulator: {commands:?}");
    let simulate = in_image(&["simulate", "--help"]);
    assert!(!simulate.status.success(), "`simulate` runs in the image's binary");
    assert!(String::from_utf8_lossy(&simulate.stderr).contains("unrecognized subcommand 'simulate'"), "{simulate:?}");

    // Where user namespaces are allowed: inside the unpacked image itself (its root, no host files, no shell).
    let userns = Command::new("unshare").args(["--user", "--map-root-user", "true"]).stderr(Stdio::null()).status();
    if userns.is_ok_and(|s| s.success()) {
        let chroot = |args: &[&str]| {
            let mut cmd = Command::new("unshare");
            cmd.args(["--user", "--map-root-user", "chroot"]).arg(root).args(args);
            // The host's PATH finds chroot; the image's PATH the rest (nothing but absolute paths here).
            cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
            cmd.stdin(Stdio::null()).output().expect("unshare chroot")
        };
        let version = chroot(&["/hpc-cache-operator", "version"]);
        assert!(version.status.success(), "version in a chroot of the image: {version:?}");
        assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("hpc-cache-operator {VERSION}"));
        assert!(!chroot(&["/bin/sh", "-c", "true"]).status.success(), "/bin/sh runs in the image");
    } else {
        eprintln!("image test: no user namespaces here; the chroot run is skipped");
    }
}
