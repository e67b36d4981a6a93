//! Tests of the exec closure against this machine's real binaries, its
//! glibc (`ldd`, `ld.so --list`, `LD_DEBUG`) and kernel (running scripts),
//! plus hostile-input tests of the ELF and ld.so.cache readers.

use super::*;
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "diatom-closure-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        // Canonical, so $ORIGIN comparisons are exact.
        Scratch(std::fs::canonicalize(&p).unwrap())
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, text: &[u8], mode: u32) -> PathBuf {
        let p = self.0.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn canon(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Compile C `src` with `cc args`, or None (with the reason printed) if
/// there is no working compiler.
fn cc(dir: &Scratch, src: &str, out: &str, args: &[&str]) -> Option<PathBuf> {
    let c = dir.write(&format!("{out}.c"), src.as_bytes(), 0o644);
    let o = dir.path().join(out);
    let res = Command::new("cc")
        .arg(&c)
        .arg("-o")
        .arg(&o)
        .args(args)
        .output();
    match res {
        Ok(r) if r.status.success() => Some(o),
        Ok(r) => {
            eprintln!(
                "SKIP: cc {args:?} failed: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP: no cc: {e}");
            None
        }
    }
}

/// `ldd`'s view: (library realpaths in load order, interpreter realpath, names not found).
fn ldd(prog: &Path, env: &[(&str, &str)]) -> (Vec<PathBuf>, Option<PathBuf>, Vec<String>) {
    let out = Command::new("ldd")
        .arg(prog)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut libs, mut interp, mut missing) = (Vec::new(), None, Vec::new());
    for line in text.lines() {
        let line = line.trim();
        if let Some((name, rest)) = line.split_once(" => ") {
            if rest.starts_with("not found") {
                missing.push(name.to_string());
            } else if let Some(path) = rest.split(" (").next() {
                libs.push(canon(Path::new(path)));
            }
        } else if line.starts_with('/') {
            if let Some(path) = line.split(" (").next() {
                interp = Some(canon(Path::new(path)));
            }
        }
    }
    // ldd shows the interpreter's own line last; drop it from the libraries
    // if it also appeared as "name => path".
    if let Some(i) = &interp {
        libs.retain(|l| l != i);
    }
    (libs, interp, missing)
}

fn lib_realpaths(plan: &ExecPlan) -> Vec<PathBuf> {
    plan.files
        .iter()
        .filter(|f| f.role == Role::Library)
        .map(|f| f.realpath())
        .collect()
}

/// The plan matches ldd exactly: same libraries, same load order, same interpreter.
fn assert_matches_ldd(prog: &Path, plan: &ExecPlan, env: &[(&str, &str)]) {
    let (libs, interp, missing) = ldd(prog, env);
    assert!(missing.is_empty(), "ldd reports missing {missing:?}");
    assert_eq!(
        lib_realpaths(plan),
        libs,
        "libraries (load order) of {}",
        prog.display()
    );
    assert_eq!(
        plan.interpreter.as_deref().map(canon),
        interp,
        "interpreter of {}",
        prog.display()
    );
}

#[test]
fn bin_true_is_interpreter_plus_libc() {
    let plan = exec_closure(Path::new("/bin/true"), &os(&["true", "x"]), &[]).unwrap();
    assert_eq!(plan.argv, os(&["true", "x"]));
    assert_eq!(plan.program, Path::new("/bin/true"));
    assert_eq!(
        plan.interpreter.as_deref(),
        Some(Path::new(ldso::HOST_LOADER))
    );
    let roles: Vec<Role> = plan.files.iter().map(|f| f.role).collect();
    assert_eq!(roles, [Role::Program, Role::Interpreter, Role::Library]);
    assert_eq!(
        plan.files[2].path,
        Path::new("/lib/x86_64-linux-gnu/libc.so.6")
    );
    assert!(plan
        .libraries
        .iter()
        .any(|(n, p)| n == "libc.so.6" && p == &plan.files[2].path));
    // libc needs ld-linux-x86-64.so.2, matched by SONAME to the interpreter.
    assert!(plan
        .libraries
        .iter()
        .any(|(n, p)| n == "ld-linux-x86-64.so.2" && p == Path::new(ldso::HOST_LOADER)));
    assert_eq!(plan.library_dirs, [PathBuf::from("/lib/x86_64-linux-gnu")]);
    let meta = std::fs::metadata("/bin/true").unwrap();
    let f = &plan.files[0];
    assert_eq!(
        (f.size, f.ino, f.dev, f.mode),
        (meta.size(), meta.ino(), meta.dev(), meta.mode())
    );
    assert_eq!(
        (f.mtime_sec, f.mtime_nsec as i64),
        (meta.mtime(), meta.mtime_nsec())
    );
    assert_matches_ldd(Path::new("/bin/true"), &plan, &[]);
}

#[test]
fn symlink_info_is_recorded() {
    let plan = exec_closure(Path::new("/usr/bin/python3"), &os(&["python3"]), &[]).unwrap();
    let prog = &plan.files[0];
    assert_eq!(
        prog.symlink(),
        Some(std::fs::read_link("/usr/bin/python3").unwrap())
    );
    assert_eq!(prog.realpath(), canon(Path::new("/usr/bin/python3")));
    for f in &plan.files {
        let is_link = std::fs::symlink_metadata(&f.path)
            .unwrap()
            .file_type()
            .is_symlink();
        assert_eq!(f.symlink().is_some(), is_link, "{}", f.path.display());
        assert_eq!(f.realpath(), canon(&f.path));
    }
}

#[test]
fn python3_and_other_system_programs_match_ldd() {
    let mut checked = 0;
    for p in [
        "/usr/bin/python3",
        "/bin/ls",
        "/usr/bin/ssh",
        "/usr/bin/git",
        "/usr/bin/perl",
        "/usr/bin/curl",
        "/usr/bin/gpg",
    ] {
        let p = Path::new(p);
        if !p.exists() {
            continue;
        }
        let plan = exec_closure(p, &os(&["x"]), &[]).unwrap();
        assert_matches_ldd(p, &plan, &[]);
        checked += 1;
    }
    assert!(checked >= 2, "too few system programs to compare against");
    // python3 needs at least these, per the brief.
    let plan = exec_closure(Path::new("/usr/bin/python3"), &os(&["python3"]), &[]).unwrap();
    for want in ["libm.so.6", "libz.so.1", "libexpat.so.1", "libc.so.6"] {
        assert!(
            plan.libraries.iter().any(|(n, _)| n == want),
            "{want} missing from {:?}",
            plan.libraries
        );
    }
}

#[test]
fn node_style_run_from_symlink_dir_loads_only_the_plan() {
    // What the node does: copy each file into a "cache" under an opaque
    // name, make a job directory of symlinks named as requested, and let
    // the cached ld.so list what it would load.
    let s = Scratch::new("node");
    let plan = exec_closure(Path::new("/usr/bin/python3"), &os(&["python3"]), &[]).unwrap();
    let cache = s.path().join("cache");
    let job = s.path().join("job");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&job).unwrap();
    let mut cached = HashMap::new();
    for (i, f) in plan.files.iter().enumerate() {
        let c = cache.join(format!("obj{i}"));
        std::fs::copy(&f.path, &c).unwrap();
        cached.insert(f.path.clone(), c);
    }
    for (name, path) in &plan.libraries {
        std::os::unix::fs::symlink(&cached[path], job.join(name)).unwrap();
    }
    let interp = &cached[plan.interpreter.as_ref().unwrap()];
    let out = Command::new(interp)
        .arg("--library-path")
        .arg(&job)
        .arg("--list")
        .arg(&cached[&plan.program])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    for line in text.lines() {
        let Some((_, path)) = line.trim().split_once(" => ") else {
            continue;
        };
        let path = path.split(" (").next().unwrap();
        if Path::new(path) == interp.as_path() {
            // The loader lists itself under its PT_INTERP name.
            continue;
        }
        assert!(
            Path::new(path).starts_with(&job),
            "loaded from outside the job dir: {line}"
        );
        n += 1;
    }
    assert_eq!(n, lib_realpaths(&plan).len(), "{text}");
    // And it really runs that way.
    let run = Command::new(interp)
        .arg("--library-path")
        .arg(&job)
        .arg("--argv0")
        .arg("python3")
        .arg(&cached[&plan.program])
        .args(["-c", "print(6*7)"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "42\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn sh_script() {
    let s = Scratch::new("sh");
    let script = s.write("hello.sh", b"#!/bin/sh\necho hi\n", 0o755);
    let plan = exec_closure(&script, &os(&["hello.sh", "a", "b"]), &[]).unwrap();
    assert_eq!(
        plan.argv,
        vec![
            OsString::from("/bin/sh"),
            script.clone().into(),
            "a".into(),
            "b".into()
        ]
    );
    assert_eq!(plan.program, Path::new("/bin/sh"));
    assert_eq!(plan.files[0].path, script);
    assert_eq!(plan.files[0].role, Role::Script);
    assert_eq!(plan.files[1].role, Role::Program);
    assert_matches_ldd(Path::new("/bin/sh"), &plan, &[]);
}

#[test]
fn env_python3_script_ships_env_not_python() {
    let s = Scratch::new("env");
    let script = s.write("p.py", b"#!/usr/bin/env python3\nprint(1)\n", 0o755);
    let plan = exec_closure(&script, &os(&["p.py", "x"]), &[]).unwrap();
    assert_eq!(
        plan.argv,
        vec![
            OsString::from("/usr/bin/env"),
            "python3".into(),
            script.clone().into(),
            "x".into()
        ]
    );
    assert_eq!(plan.program, Path::new("/usr/bin/env"));
    assert!(
        plan.files
            .iter()
            .all(|f| !f.realpath().to_string_lossy().contains("python")),
        "{:?}",
        plan.files
    );
}

#[test]
fn nested_shebangs_match_the_kernel_and_its_depth_limit() {
    let s = Scratch::new("nest");
    // s0 -> /bin/echo (ELF); sN -> sN-1. echo prints the argv the kernel built.
    let mut scripts = vec![s.write("s0", b"#!/bin/echo  first-arg \n", 0o755)];
    for i in 1..=MAX_SCRIPT_DEPTH {
        let prev = scripts[i - 1].display().to_string();
        let body = if i % 2 == 0 {
            format!("#!{prev}\n")
        } else {
            format!("#! \t{prev} opt{i}\t\n")
        };
        scripts.push(s.write(&format!("s{i}"), body.as_bytes(), 0o755));
    }
    for (i, sc) in scripts.iter().enumerate() {
        let real = Command::new(sc).args(["a", "b c"]).output();
        let ours = exec_closure(sc, &os(&["ignored", "a", "b c"]), &[]);
        if i < MAX_SCRIPT_DEPTH {
            let real = real.unwrap();
            assert!(real.status.success(), "kernel refused depth {}", i + 1);
            let plan = ours.unwrap();
            assert_eq!(plan.program, Path::new("/bin/echo"));
            let joined: Vec<String> = plan.argv[1..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                format!("{}\n", joined.join(" ")),
                String::from_utf8_lossy(&real.stdout)
            );
            let scripts_in_plan = plan.files.iter().filter(|f| f.role == Role::Script).count();
            assert_eq!(scripts_in_plan, i + 1);
            assert_eq!(plan.files[0].path, *sc);
        } else {
            // Six scripts: the kernel says ELOOP, and so do we.
            assert_eq!(real.unwrap_err().raw_os_error(), Some(libc::ELOOP));
            assert!(
                matches!(ours, Err(ClosureError::TooManyInterpreters(_))),
                "{ours:?}"
            );
        }
    }
}

#[test]
fn shebang_parsing_follows_binfmt_script() {
    fn p(line: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), &'static str> {
        let mut buf = [0u8; BINPRM_BUF_SIZE];
        let n = line.len().min(BINPRM_BUF_SIZE);
        buf[..n].copy_from_slice(&line[..n]);
        parse_shebang(&buf)
    }
    let s = |x: &str| x.as_bytes().to_vec();
    assert_eq!(p(b"#!/bin/sh\n"), Ok((s("/bin/sh"), None)));
    assert_eq!(p(b"#!/bin/sh"), Ok((s("/bin/sh"), None)));
    assert_eq!(
        p(b"#! \t/bin/echo \t a  b \t\nrest"),
        Ok((s("/bin/echo"), Some(s("a  b"))))
    );
    assert_eq!(p(b"#!/bin/sh -x"), Ok((s("/bin/sh"), Some(s("-x")))));
    assert_eq!(p(b"#!/bin/sh\r\n"), Ok((s("/bin/sh\r"), None)));
    assert!(p(b"#!\n").is_err());
    assert!(p(b"#!   \t\n").is_err());
    // Argument cut at byte 255: allowed, truncated (measured: 243 x's).
    let mut long = b"#!/bin/echo ".to_vec();
    long.extend([b'x'; 300]);
    let (name, arg) = p(&long).unwrap();
    assert_eq!(name, s("/bin/echo"));
    assert_eq!(arg.unwrap().len(), 243);
    // Interpreter name that does not end inside the buffer: ENOEXEC.
    let mut long = b"#!/".to_vec();
    long.extend([b'/'; 300]);
    assert!(p(&long).is_err());
}

#[test]
fn file_without_magic_runs_with_bin_sh_like_execvp() {
    let s = Scratch::new("nomagic");
    let f = s.write("plain", b"echo hi\n", 0o755);
    let plan = exec_closure(&f, &os(&["plain", "1"]), &[]).unwrap();
    assert_eq!(
        plan.argv,
        vec![OsString::from("/bin/sh"), f.clone().into(), "1".into()]
    );
    assert_eq!(plan.program, Path::new("/bin/sh"));
    assert_eq!(plan.files[0].role, Role::Script);
}

const HELLO_C: &str = "#include <stdio.h>\nint main(void){puts(\"hello\");return 0;}\n";

#[test]
fn static_and_static_pie_have_no_interpreter() {
    let s = Scratch::new("static");
    for (name, flag) in [("st", "-static"), ("stpie", "-static-pie")] {
        let Some(bin) = cc(&s, HELLO_C, name, &[flag]) else {
            eprintln!("SKIP: {flag} (needs libc6-dev static libraries)");
            continue;
        };
        let plan = exec_closure(&bin, &os(&[name]), &[]).unwrap();
        assert_eq!(plan.interpreter, None, "{flag}");
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].role, Role::Program);
        assert!(plan.libraries.is_empty() && plan.library_dirs.is_empty());
        assert_eq!(Command::new(&bin).output().unwrap().stdout, b"hello\n");
    }
}

const LIB_C: &str = "int tiny(void){return 42;}\n";
const USE_C: &str = "int tiny(void);\nint main(void){return tiny()==42?0:1;}\n";

/// Build lib/libtiny.so and a program using it with the given link flags.
fn tiny_setup(s: &Scratch, flags: &[&str]) -> Option<PathBuf> {
    std::fs::create_dir_all(s.path().join("lib")).unwrap();
    cc(s, LIB_C, "lib/libtiny.so", &["-shared", "-fPIC"])?;
    let libdir = format!("-L{}", s.path().join("lib").display());
    let mut args = vec![libdir.as_str(), "-ltiny"];
    args.extend_from_slice(flags);
    cc(s, USE_C, "prog", &args)
}

#[test]
fn runpath_origin_lib() {
    let s = Scratch::new("runpath");
    let Some(prog) = tiny_setup(&s, &["-Wl,-rpath,$ORIGIN/lib", "-Wl,--enable-new-dtags"]) else {
        return;
    };
    assert!(Command::new(&prog).status().unwrap().success());
    let fresh = Resolver::probing(PathBuf::from(ldso::HOST_LOADER), LD_CACHE_FILE.into(), None);
    let plan = fresh.exec_closure(&prog, &os(&["prog"]), &[]).unwrap();
    // A RUNPATH search tries hwcaps subdirectories: ld.so was asked.
    assert!(fresh.config_loaded());
    let lib = s.path().join("lib/libtiny.so");
    assert!(
        plan.libraries
            .contains(&(OsString::from("libtiny.so"), lib.clone())),
        "{:?}",
        plan.libraries
    );
    assert_eq!(plan.library_dirs[0], s.path().join("lib"));
    assert_matches_ldd(&prog, &plan, &[]);
    // The program run through a symlink: $ORIGIN is the real directory.
    let link = s.path().join("other/prog-link");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&prog, &link).unwrap();
    let plan = exec_closure(&link, &os(&["prog"]), &[]).unwrap();
    assert!(plan
        .libraries
        .contains(&(OsString::from("libtiny.so"), lib)));
}

/// libA (in a/) needs libB (only in b/); the program has a search path with
/// both a/ and b/. DT_RPATH is inherited by libA's search, DT_RUNPATH is not.
fn chain_setup(s: &Scratch, dtags: &str) -> Option<PathBuf> {
    std::fs::create_dir_all(s.path().join("a")).unwrap();
    std::fs::create_dir_all(s.path().join("b")).unwrap();
    cc(
        s,
        "int b(void){return 1;}\n",
        "b/libB.so",
        &["-shared", "-fPIC"],
    )?;
    let lb = format!("-L{}", s.path().join("b").display());
    cc(
        s,
        "int b(void);int a(void){return b();}\n",
        "a/libA.so",
        &["-shared", "-fPIC", &lb, "-lB"],
    )?;
    let la = format!("-L{}", s.path().join("a").display());
    let rp = "-Wl,-rpath,$ORIGIN/a:$ORIGIN/b".to_string();
    cc(
        s,
        "int a(void);int main(void){return a()-1;}\n",
        "prog",
        &[
            &la,
            "-lA",
            &rp,
            dtags,
            "-Wl,-rpath-link",
            &format!("-Wl,{}", s.path().join("b").display()),
        ],
    )
}

#[test]
fn rpath_is_inherited_runpath_is_not() {
    let s = Scratch::new("rpath");
    let Some(prog) = chain_setup(&s, "-Wl,--disable-new-dtags") else {
        return;
    };
    assert!(Command::new(&prog).status().unwrap().success());
    let plan = exec_closure(&prog, &os(&["prog"]), &[]).unwrap();
    assert!(plan
        .libraries
        .contains(&(OsString::from("libB.so"), s.path().join("b/libB.so"))));
    assert_matches_ldd(&prog, &plan, &[]);

    let s = Scratch::new("runpath2");
    let Some(prog) = chain_setup(&s, "-Wl,--enable-new-dtags") else {
        return;
    };
    let err = exec_closure(&prog, &os(&["prog"]), &[]).unwrap_err();
    let (_, _, missing) = ldd(&prog, &[]);
    assert_eq!(missing, ["libB.so"]);
    match err {
        ClosureError::LibraryNotFound { library, needed_by } => {
            assert_eq!(library, "libB.so");
            assert_eq!(needed_by, s.path().join("a/libA.so"));
        }
        e => panic!("{e}"),
    }
    // LD_LIBRARY_PATH from the job's environment fixes it, for ldd too.
    let b = s.path().join("b").display().to_string();
    let env = [(
        OsString::from("LD_LIBRARY_PATH"),
        OsString::from(format!("/nonexistent::;{b}")),
    )];
    let plan = exec_closure(&prog, &os(&["prog"]), &env).unwrap();
    assert!(plan
        .libraries
        .contains(&(OsString::from("libB.so"), s.path().join("b/libB.so"))));
    assert_matches_ldd(
        &prog,
        &plan,
        &[("LD_LIBRARY_PATH", &format!("/nonexistent::;{b}"))],
    );
}

#[test]
fn missing_library_names_library_and_needer() {
    let s = Scratch::new("missing");
    let Some(prog) = tiny_setup(&s, &[]) else {
        return;
    };
    let err = exec_closure(&prog, &os(&["prog"]), &[]).unwrap_err();
    match &err {
        ClosureError::LibraryNotFound { library, needed_by } => {
            assert_eq!(library, "libtiny.so");
            assert_eq!(needed_by, &prog);
        }
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("libtiny.so: not found"), "{err}");
}

#[test]
fn preload_from_env_is_in_the_closure() {
    let s = Scratch::new("preload");
    let Some(_) = tiny_setup(&s, &[]) else { return };
    let lib = s.path().join("lib/libtiny.so");
    let env = [(
        OsString::from("LD_PRELOAD"),
        OsString::from(format!("{} libnonexistent.so", lib.display())),
    )];
    let plan = exec_closure(Path::new("/bin/true"), &os(&["true"]), &env).unwrap();
    assert_eq!(plan.preload, std::slice::from_ref(&lib));
    let libs: Vec<&Path> = plan
        .files
        .iter()
        .filter(|f| f.role == Role::Library)
        .map(|f| f.path.as_path())
        .collect();
    assert_eq!(libs[0], lib, "preloads load first");
}

#[test]
fn wrong_class_candidates_are_skipped_bad_ones_are_fatal() {
    let s = Scratch::new("skip");
    let Some(prog) = tiny_setup(
        &s,
        &[
            "-Wl,-rpath,$ORIGIN/first:$ORIGIN/lib",
            "-Wl,--enable-new-dtags",
        ],
    ) else {
        return;
    };
    // A 32-bit-class file of the same name earlier in RUNPATH is skipped...
    let mut other = std::fs::read(s.path().join("lib/libtiny.so")).unwrap();
    other[4] = 1;
    s.write("first/libtiny.so", &other, 0o755);
    let plan = exec_closure(&prog, &os(&["prog"]), &[]).unwrap();
    assert!(plan.libraries.contains(&(
        OsString::from("libtiny.so"),
        s.path().join("lib/libtiny.so")
    )));
    // ...a garbage one is a hard error, as for glibc ("invalid ELF header").
    s.write(
        "first/libtiny.so",
        b"garbage that is long enough to be an ELF header, but is not one at all....",
        0o755,
    );
    let err = exec_closure(&prog, &os(&["prog"]), &[]).unwrap_err();
    assert!(
        matches!(err, ClosureError::BadLibrary { ref path, .. } if path == &s.path().join("first/libtiny.so")),
        "{err}"
    );
    assert!(
        !Command::new(&prog).status().unwrap().success(),
        "glibc agrees it is fatal"
    );
}

#[test]
fn truncated_and_garbage_elves_are_errors() {
    let s = Scratch::new("garbage");
    let real = std::fs::read("/bin/true").unwrap();
    for len in [0usize, 1, 3, 4, 10, 63, 64, 65, 100, 200, 1000, 4096] {
        let p = s.write(&format!("t{len}"), &real[..len.min(real.len())], 0o755);
        let r = exec_closure(&p, &os(&["t"]), &[]);
        if len < 4 {
            // Not even the magic: run by /bin/sh, like execvp would.
            assert_eq!(r.unwrap().program, Path::new("/bin/sh"));
        } else {
            assert!(
                matches!(r, Err(ClosureError::BadExecutable { .. })),
                "len {len}: {r:?}"
            );
        }
    }
    let mut arm = real.clone();
    arm[18..20].copy_from_slice(&elf::EM_AARCH64.to_le_bytes());
    let p = s.write("arm", &arm, 0o755);
    let r = exec_closure(&p, &os(&["arm"]), &[]);
    assert!(
        matches!(
            r,
            Err(ClosureError::BadExecutable {
                reason: ElfError::WrongMachine(183),
                ..
            })
        ),
        "{r:?}"
    );
    let mut junk = b"\x7fELF".to_vec();
    junk.extend((0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
    let p = s.write("junk", &junk, 0o755);
    assert!(matches!(
        exec_closure(&p, &os(&["j"]), &[]),
        Err(ClosureError::BadExecutable { .. })
    ));
}

#[test]
fn real_ld_cache_agrees_with_ldconfig() {
    let cache = parse_ld_cache_file(Path::new(LD_CACHE_FILE)).unwrap();
    assert!(cache.len() > 10);
    let hwcaps = &Resolver::system().config().hwcaps;
    let out = Command::new("/sbin/ldconfig").arg("-p").output().unwrap();
    let mut first: HashMap<String, String> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let Some((lhs, path)) = line.trim().split_once(" => ") else {
            continue;
        };
        let Some((name, flags)) = lhs.split_once(" (") else {
            continue;
        };
        let want = if cfg!(target_arch = "aarch64") {
            "libc6,AArch64"
        } else {
            "libc6,x86-64"
        };
        if flags.starts_with(want) && !flags.contains("hwcap") {
            first
                .entry(name.to_string())
                .or_insert_with(|| path.to_string());
        }
    }
    assert!(first.len() > 10);
    for (name, path) in &first {
        let got = cache
            .lookup(name.as_bytes(), hwcaps)
            .map(|p| String::from_utf8_lossy(p).into_owned());
        assert_eq!(got.as_deref(), Some(path.as_str()), "{name}");
    }
    assert_eq!(cache.lookup(b"libdoesnotexist.so.9", hwcaps), None);
}

#[test]
fn garbage_ld_cache_is_an_error_and_is_ignored_by_closure() {
    let s = Scratch::new("cache");
    let p = s.write(
        "ld.so.cache",
        b"glibc-ld.so.cache1.1 and then nonsense",
        0o644,
    );
    assert!(matches!(
        parse_ld_cache_file(&p),
        Err(ClosureError::BadLdCache { .. })
    ));
    let p2 = s.write("other", b"not a cache", 0o644);
    assert!(matches!(
        parse_ld_cache_file(&p2),
        Err(ClosureError::BadLdCache {
            reason: CacheError::BadMagic,
            ..
        })
    ));
    // Every truncation of the real cache: an error or a cache, never a panic.
    let real = std::fs::read(LD_CACHE_FILE).unwrap();
    for len in (0..real.len()).step_by(97) {
        let _ = LdCache::parse(&real[..len]);
    }
    assert!(LdCache::parse(&real[..100]).is_err());
    // exec_closure with a garbage cache still works: system directories.
    let r = Resolver::new(Resolver::system().config().clone(), p, None);
    let plan = r
        .exec_closure(Path::new("/usr/bin/python3"), &os(&["python3"]), &[])
        .unwrap();
    assert_matches_ldd(Path::new("/usr/bin/python3"), &plan, &[]);
}

/// One entry of a synthetic cache: name, flags, path, hwcap field.
type CacheEntry<'a> = (&'a str, i32, &'a str, u64);

/// A new-format `ld.so.cache` with `entries` in this order and, when
/// `hwcaps` is not empty, a glibc-hwcaps extension naming them; behind an
/// old-format prefix of `old` entries when `old` is `Some`.
fn synthetic_cache(entries: &[CacheEntry<'_>], hwcaps: &[&str], old: Option<u32>) -> Vec<u8> {
    let mut strings = Vec::new();
    let mut offsets = Vec::new();
    let table_end = 48 + 24 * entries.len();
    let ext_len = if hwcaps.is_empty() {
        0
    } else {
        8 + 16 + 4 * hwcaps.len()
    };
    let strings_at = table_end + ext_len;
    let mut intern = |s: &str| {
        let off = strings_at + strings.len();
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off as u32
    };
    for (name, _, path, _) in entries {
        offsets.push((intern(name), intern(path)));
    }
    let hwcap_offs: Vec<u32> = hwcaps.iter().map(|h| intern(h)).collect();
    let mut d = b"glibc-ld.so.cache1.1".to_vec();
    d.extend((entries.len() as u32).to_le_bytes());
    d.extend((strings.len() as u32).to_le_bytes());
    d.extend([2u8, 0, 0, 0]); // little endian
    let ext_at = if hwcaps.is_empty() {
        0
    } else {
        table_end as u32
    };
    d.extend(ext_at.to_le_bytes());
    d.extend([0u8; 12]);
    for ((_, flags, _, hwcap), (key, value)) in entries.iter().zip(&offsets) {
        d.extend(flags.to_le_bytes());
        d.extend(key.to_le_bytes());
        d.extend(value.to_le_bytes());
        d.extend(0u32.to_le_bytes());
        d.extend(hwcap.to_le_bytes());
    }
    if !hwcaps.is_empty() {
        let array_at = table_end + 8 + 16;
        d.extend(0xeaa4_2174u32.to_le_bytes());
        d.extend(1u32.to_le_bytes());
        d.extend(1u32.to_le_bytes()); // glibc-hwcaps section
        d.extend(0u32.to_le_bytes());
        d.extend((array_at as u32).to_le_bytes());
        d.extend(((4 * hwcaps.len()) as u32).to_le_bytes());
        for off in hwcap_offs {
            d.extend(off.to_le_bytes());
        }
    }
    d.extend(strings);
    match old {
        None => d,
        Some(n) => {
            let mut f = b"ld.so-1.7.0\0".to_vec();
            f.extend(n.to_le_bytes());
            f.extend(vec![0u8; 12 * n as usize]);
            f.resize((f.len() + 7) & !7, 0);
            f.extend(d);
            f
        }
    }
}

#[test]
fn ld_cache_lookup_follows_search_cache() {
    const HOST: i32 = ldcache::HOST_CACHE_ID;
    const NAMED: u64 = 1 << 62;
    let entries: &[CacheEntry<'_>] = &[
        ("libz.so.1", HOST, "/lib/v3/libz.so.1", NAMED | 1),
        ("libz.so.1", HOST, "/lib/v2/libz.so.1", NAMED),
        ("libz.so.1", HOST, "/lib/libz.so.1", 0),
        ("libz.so.1", HOST, "/lib/after/libz.so.1", 0),
        ("liba.so.2", 0x0103, "/lib32/liba.so.2", 0), // another ABI
        ("liba.so.2", HOST, "/lib/tls/liba.so.2", 1 << 5), // legacy hwcap
        ("liba.so.2", 0x0003, "/lib/generic/liba.so.2", 0),
        ("liba.so.2", HOST, "/lib/host/liba.so.2", 0),
        ("liba.so.2", 0x0003, "/lib/generic2/liba.so.2", 0),
        ("libb.so", HOST, "/lib/bad-index/libb.so", NAMED | 7),
        ("libb.so", HOST, "/lib/libb.so", 0),
        // Names are compared whole: neither a prefix nor an extension
        // matches.
        ("libz.so", HOST, "/wrong/libz.so", 0),
        ("libz.so.10", HOST, "/wrong/libz.so.10", 0),
    ];
    let hwcaps = ["x86-64-v2", "x86-64-v3"];
    for old in [None, Some(3)] {
        let bytes = synthetic_cache(entries, &hwcaps, old);
        let cache = LdCache::parse(&bytes).unwrap();
        assert_eq!(cache.len(), entries.len());
        let look = |name: &str, sup: &[&str]| {
            let sup: Vec<Vec<u8>> = sup.iter().map(|s| s.as_bytes().to_vec()).collect();
            cache
                .lookup(name.as_bytes(), &sup)
                .map(|p| String::from_utf8_lossy(p).into_owned())
        };
        // The best supported hwcaps subdirectory wins (priority = position
        // in the CPU's list), whatever the file order.
        assert_eq!(
            look("libz.so.1", &["x86-64-v3", "x86-64-v2"]).as_deref(),
            Some("/lib/v3/libz.so.1")
        );
        assert_eq!(
            look("libz.so.1", &["x86-64-v2", "x86-64-v3"]).as_deref(),
            Some("/lib/v2/libz.so.1")
        );
        assert_eq!(
            look("libz.so.1", &["x86-64-v2"]).as_deref(),
            Some("/lib/v2/libz.so.1")
        );
        // No supported subdirectory: the first plain entry.
        assert_eq!(look("libz.so.1", &[]).as_deref(), Some("/lib/libz.so.1"));
        // Other ABIs and legacy hwcap entries are skipped; the first
        // generic libc6 entry is taken, and the next plain entry ends the
        // walk (glibc lists hwcaps entries first).
        assert_eq!(
            look("liba.so.2", &[]).as_deref(),
            Some("/lib/generic/liba.so.2")
        );
        // A hwcaps index past the extension's list is skipped.
        assert_eq!(look("libb.so", &hwcaps).as_deref(), Some("/lib/libb.so"));
        assert_eq!(look("libz.so", &[]).as_deref(), Some("/wrong/libz.so"));
        assert_eq!(look("libnone.so", &hwcaps), None);
        assert_eq!(look("", &hwcaps), None);
        // The CPU's list is asked for only when a glibc-hwcaps entry needs it.
        let asked = std::cell::Cell::new(0);
        let sup = vec![b"x86-64-v3".to_vec()];
        let got = cache.lookup_with(b"liba.so.2", || {
            asked.set(asked.get() + 1);
            &sup
        });
        assert_eq!(got, Some(&b"/lib/generic/liba.so.2"[..]));
        assert_eq!(asked.get(), 0);
        let got = cache.lookup_with(b"libz.so.1", || {
            asked.set(asked.get() + 1);
            &sup
        });
        assert_eq!(got, Some(&b"/lib/v3/libz.so.1"[..]));
        assert_eq!(asked.get(), 1);
    }
}

#[test]
fn ld_cache_entries_must_point_inside_the_file() {
    let good = synthetic_cache(&[("liba.so", 0x0303, "/lib/liba.so", 0)], &[], None);
    assert!(LdCache::parse(&good).is_ok());
    let set = |field: usize, value: u32| {
        let mut b = good.clone();
        b[48 + field..48 + field + 4].copy_from_slice(&value.to_le_bytes());
        LdCache::parse(&b).map(|c| c.len())
    };
    let len = good.len() as u32;
    // The last byte is the path's NUL: a string may start there (empty),
    // not past it.
    assert_eq!(set(4, len - 1), Ok(1));
    assert_eq!(set(4, len), Err(CacheError::Truncated("entry name")));
    assert_eq!(set(8, len), Err(CacheError::Truncated("entry path")));
    assert_eq!(set(8, u32::MAX), Err(CacheError::Truncated("entry path")));
    // A file whose strings lack their final NUL.
    let mut cut = good.clone();
    cut.pop();
    assert_eq!(
        LdCache::parse(&cut).map(|c| c.len()),
        Err(CacheError::Truncated("entry path"))
    );
    // More entries than the file holds.
    let mut many = good.clone();
    many[20..24].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(
        LdCache::parse(&many).map(|c| c.len()),
        Err(CacheError::Truncated("entries"))
    );
}

#[test]
fn loader_config_matches_ld_debug() {
    let cfg = Resolver::system().config();
    assert!(!cfg.system_dirs.is_empty());
    // glibc prints every directory it will try for an LD_LIBRARY_PATH element
    // with $LIB and $PLATFORM expanded and all hwcaps subdirectories.
    let out = Command::new("/bin/true")
        .env("LD_LIBRARY_PATH", "/nonexistent-diatom/$LIB/${PLATFORM}")
        .env("LD_DEBUG", "libs")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("(LD_LIBRARY_PATH)"))
        .expect("LD_DEBUG output");
    let glibc = line
        .split("search path=")
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .trim();
    let dirs = split_path_list(b"/nonexistent-diatom/$LIB/${PLATFORM}", b":", cfg, None);
    let ours: Vec<String> = cfg
        .subdirs
        .iter()
        .map(|sub| {
            dirs[0]
                .join(sub)
                .display()
                .to_string()
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    assert_eq!(ours.join(":"), glibc);
}

#[test]
fn dst_expansion() {
    let cfg = LoaderConfig::parse_help(
        b"Shared library search path:\n  (libraries located via /etc/ld.so.cache)\n  /lib64 (system search path)\n\nLegacy HWCAP subdirectories under library search path directories:\n  haswell (AT_PLATFORM; supported, searched)\n",
    )
    .unwrap();
    assert_eq!(cfg.lib, b"lib64");
    let o = Some(Path::new("/o"));
    let e = |s: &str| expand_dst(s.as_bytes(), &cfg, o).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(e("$ORIGIN/lib").as_deref(), Some("/o/lib"));
    assert_eq!(
        e("${ORIGIN}/../$LIB/$PLATFORM").as_deref(),
        Some("/o/../lib64/haswell")
    );
    assert_eq!(e("$ORIGINAL/x").as_deref(), Some("$ORIGINAL/x"));
    assert_eq!(e("$FOO").as_deref(), Some("$FOO"));
    assert_eq!(expand_dst(b"$ORIGIN", &cfg, None), None);
    assert_eq!(cfg.subdirs, [PathBuf::from("haswell"), PathBuf::new()]);
    // Empty list: no directory; empty elements: the cwd.
    assert!(split_path_list(b"", b":", &cfg, o).is_empty());
    assert_eq!(
        split_path_list(b":/a:", b":", &cfg, o),
        [PathBuf::new(), "/a".into(), PathBuf::new()]
    );
    assert_eq!(
        split_path_list(b"$ORIGIN/x:/y", b":", &cfg, None),
        [PathBuf::from("/y")]
    );
}

#[test]
fn resolve_program_cases() {
    let s = Scratch::new("resolve");
    let bin = s.path().join("bin");
    std::fs::create_dir_all(bin.join("adir")).unwrap();
    s.write("bin/tool", b"#!/bin/sh\n", 0o755);
    s.write("bin/noexec", b"#!/bin/sh\n", 0o644);
    s.write("other/noexec", b"#!/bin/sh\n", 0o755);
    s.write("other/adir", b"#!/bin/sh\n", 0o755);
    let path = OsString::from(format!(
        "/nonexistent:{}:{}",
        bin.display(),
        s.path().join("other").display()
    ));
    let r = |name: &str| resolve_program(name, Some(&path), s.path());
    assert_eq!(r("tool").unwrap(), bin.join("tool"));
    // Non-executable and directory entries are skipped in favour of later ones.
    assert_eq!(r("noexec").unwrap(), s.path().join("other/noexec"));
    assert_eq!(r("adir").unwrap(), s.path().join("other/adir"));
    assert!(matches!(r("nosuch"), Err(ClosureError::NotFound(p)) if p == Path::new("nosuch")));
    assert!(matches!(r(""), Err(ClosureError::NotFound(_))));
    // Only a non-executable match: permission denied, like bash.
    let only = OsString::from(bin.display().to_string());
    assert!(matches!(
        resolve_program("noexec", Some(&only), s.path()),
        Err(ClosureError::PermissionDenied(_))
    ));
    // Names with a slash are relative to cwd, no PATH search.
    assert_eq!(r("bin/tool").unwrap(), bin.join("tool"));
    assert_eq!(r("./bin/tool").unwrap(), s.path().join("./bin/tool"));
    assert!(matches!(
        r("bin/noexec"),
        Err(ClosureError::PermissionDenied(_))
    ));
    assert!(matches!(r("bin/adir"), Err(ClosureError::IsADirectory(_))));
    assert!(matches!(r("bin/missing"), Err(ClosureError::NotFound(_))));
    assert!(matches!(r("bin/tool/x"), Err(ClosureError::NotFound(_))));
    assert_eq!(
        resolve_program("/bin/true", None, Path::new("/nonexistent")).unwrap(),
        Path::new("/bin/true")
    );
    // Empty PATH element is the cwd; no PATH is /bin:/usr/bin.
    let empty_first = OsString::from(":/nonexistent");
    assert_eq!(
        resolve_program("tool", Some(&empty_first), &bin).unwrap(),
        bin.join("tool")
    );
    assert_eq!(
        resolve_program("true", None, s.path()).unwrap(),
        Path::new("/bin/true")
    );
    // exec_closure agrees on a non-executable file.
    assert!(matches!(
        exec_closure(&bin.join("noexec"), &os(&["x"]), &[]),
        Err(ClosureError::PermissionDenied(_))
    ));
    assert!(matches!(
        exec_closure(&bin, &os(&["x"]), &[]),
        Err(ClosureError::IsADirectory(_))
    ));
    // A FIFO as the interpreter: refused at once (it used to block in
    // the open, waiting for a writer), as execve refuses it.
    let fifo = s.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
    s.write(
        "bin/via-fifo",
        format!("#!{}\n", fifo.display()).as_bytes(),
        0o755,
    );
    assert!(matches!(
        exec_closure(&bin.join("via-fifo"), &os(&["x"]), &[]),
        Err(ClosureError::PermissionDenied(_))
    ));
}

#[test]
fn timing_python3_closure() {
    let argv = os(&["python3"]);
    let python = Path::new("/usr/bin/python3");
    // Cold: a fresh resolver parses ld.so.cache; python3's libraries are all
    // in it, so ld.so is never asked for its configuration.
    let t = std::time::Instant::now();
    let fresh = Resolver::probing(
        PathBuf::from(ldso::HOST_LOADER),
        PathBuf::from(LD_CACHE_FILE),
        Some(PathBuf::from(PRELOAD_FILE)),
    );
    fresh.exec_closure(python, &argv, &[]).unwrap();
    let cold = t.elapsed();
    assert!(
        !fresh.config_loaded(),
        "python3 should not need ld.so --help"
    );
    let t = std::time::Instant::now();
    let _ = LoaderConfig::probe(Path::new(ldso::HOST_LOADER));
    let probe = t.elapsed();
    let n = 500;
    let t = std::time::Instant::now();
    for _ in 0..n {
        fresh.exec_closure(python, &argv, &[]).unwrap();
    }
    let warm = t.elapsed() / n;
    let t = std::time::Instant::now();
    let _ = LdCache::parse(&std::fs::read(LD_CACHE_FILE).unwrap()).unwrap();
    let parse = t.elapsed();
    eprintln!(
        "TIMING: python3 closure cold {cold:?} (ld.so --help probe, when needed: {probe:?}), \
         warm {warm:?}/call; ld.so.cache read+parse {parse:?}"
    );
    // Generous bound so a loaded CI machine does not flake; the target is ~1 ms.
    assert!(warm < std::time::Duration::from_millis(20), "{warm:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_as_elf_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = elf::parse(bytes.as_slice(), bytes.len() as u64);
    }

    #[test]
    fn mutated_real_elf_never_panics(edits in proptest::collection::vec((0usize..8192, any::<u8>()), 1..16), size in 0u64..20000) {
        let mut b = TRUE_PREFIX.with(|p| p.clone());
        for (i, v) in edits {
            if let Some(x) = b.get_mut(i) { *x = v; }
        }
        // Claimed size may disagree with the bytes we have.
        let _ = elf::parse(b.as_slice(), size);
        let _ = elf::parse(b.as_slice(), b.len() as u64);
    }

    #[test]
    fn arbitrary_bytes_as_ld_cache_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), magic in any::<bool>()) {
        let mut b = if magic { b"glibc-ld.so.cache1.1".to_vec() } else { Vec::new() };
        b.extend(bytes);
        if let Ok(c) = LdCache::parse(&b) {
            let _ = c.lookup(b"libc.so.6", &[b"x86-64-v2".to_vec()]);
        }
    }

    #[test]
    fn mutated_real_ld_cache_never_panics(edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..16)) {
        let mut b = CACHE_PREFIX.with(|p| p.clone());
        for (i, v) in edits {
            if let Some(x) = b.get_mut(i) { *x = v; }
        }
        if let Ok(c) = LdCache::parse(&b) {
            let _ = c.lookup(b"libc.so.6", &[b"x86-64-v3".to_vec()]);
        }
    }

    #[test]
    fn arbitrary_shebang_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..BINPRM_BUF_SIZE)) {
        let mut buf = [0u8; BINPRM_BUF_SIZE];
        buf[..2].copy_from_slice(b"#!");
        let n = bytes.len().min(BINPRM_BUF_SIZE - 2);
        buf[2..2 + n].copy_from_slice(&bytes[..n]);
        // The name may be empty (then the kernel's open fails with ENOENT),
        // but never holds a separator; neither part holds a NUL.
        if let Ok((name, arg)) = parse_shebang(&buf) {
            prop_assert!(!name.iter().any(|&c| c == 0 || c == b' ' || c == b'\t' || c == b'\n'));
            prop_assert!(!arg.unwrap_or_default().iter().any(|&c| c == 0 || c == b'\n'));
        }
    }
}

thread_local! {
    static TRUE_PREFIX: Vec<u8> = std::fs::read("/bin/true").unwrap().into_iter().take(16384).collect();
    static CACHE_PREFIX: Vec<u8> = std::fs::read(LD_CACHE_FILE).unwrap();
}
