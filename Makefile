# Diatom: build, test, install. `make`, `make test`, `make install`.
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
CARGO      ?= cargo
BINS       := diatom diatom-central diatom-client
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: all build static-client static-cli test vm-test install uninstall bench clean

all: build

build:
	$(CARGO) build --release --bins

# A node daemon that needs nothing installed on its machine: statically
# linked, in $(TARGET_DIR)/$(STATIC_TARGET)/release/diatom-client. The
# bare-node test (tests/integration/files.rs) runs it where there is no /lib.
STATIC_TARGET ?= x86_64-unknown-linux-gnu
static-client:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p diatom-client --target $(STATIC_TARGET)

# The CLI, statically linked, in $(TARGET_DIR)/static/diatom (what `make
# install` installs): every `diatom exec` starts sooner than with a
# dynamically linked one. It never asks NSS (see user_name in
# central/src/daemon/core.rs). By default it is built against musl
# (`rustup target add x86_64-unknown-linux-musl`, musl-gcc from Debian's
# musl-tools): it starts in ~0.5 ms where glibc's start probes the CPU
# with CPUID (a VM exit each) for ~0.6 ms more, and with its own allocator
# (central/src/alloc.rs) its home serves files and output as fast as the
# glibc one (BENCHMARKS.md, "The CLI against musl"). `make static-cli
# CLI_LIBC=gnu` builds it against glibc; without the musl target or
# musl-gcc the default falls back to glibc, and says so.
CLI_LIBC ?= auto
MUSL_TARGET := x86_64-unknown-linux-musl
static-cli:
	@mkdir -p $(TARGET_DIR)/static
	@libc=$(CLI_LIBC); \
	if [ "$$libc" = auto ]; then \
	  if [ -d "$$(rustc --print target-libdir --target $(MUSL_TARGET) 2>/dev/null)" ] && command -v musl-gcc >/dev/null; then \
	    libc=musl; \
	  else \
	    libc=gnu; \
	    echo "make static-cli: no $(MUSL_TARGET) target (rustup) or no musl-gcc (musl-tools): building the CLI against glibc" >&2; \
	  fi; \
	fi; \
	case $$libc in \
	  musl) set -x; $(CARGO) build --release -p diatom-central --bin diatom --target $(MUSL_TARGET) && \
	        cp -f $(TARGET_DIR)/$(MUSL_TARGET)/release/diatom $(TARGET_DIR)/static/diatom ;; \
	  gnu) set -x; RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p diatom-central --bin diatom --target $(STATIC_TARGET) && \
	        cp -f $(TARGET_DIR)/$(STATIC_TARGET)/release/diatom $(TARGET_DIR)/static/diatom ;; \
	  *) echo "make static-cli: CLI_LIBC is musl, gnu or auto, not '$$libc'" >&2; exit 2 ;; \
	esac

# The integration tests run the workspace's binaries (and the static node
# daemon and CLI), so build them first.
test: static-client static-cli
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# Just the tests whose nodes are QEMU/TCG virtual machines booting the
# static node daemon (tests/integration/vm.rs). Root; packages
# qemu-system-x86, linux-image-cloud-amd64, busybox-static.
vm-test: static-client
	$(CARGO) build --workspace --bins
	$(CARGO) test -p diatom-tests --test integration -- vm::

install: build static-cli
	install -d $(DESTDIR)$(BINDIR)
	for b in diatom-central diatom-client; do install -m 0755 $(TARGET_DIR)/release/$$b $(DESTDIR)$(BINDIR)/$$b; done
	install -m 0755 $(TARGET_DIR)/static/diatom $(DESTDIR)$(BINDIR)/diatom
	install -d $(DESTDIR)$(UNITDIR)
	for u in diatom-central diatom-client; do \
	  sed 's|@BINDIR@|$(BINDIR)|g' packaging/systemd/$$u.service > $(DESTDIR)$(UNITDIR)/$$u.service; \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service; done
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/diatom
	test -e $(DESTDIR)$(SYSCONFDIR)/diatom/diatom.toml || \
	  install -m 0644 packaging/diatom.toml $(DESTDIR)$(SYSCONFDIR)/diatom/diatom.toml

uninstall:
	for b in $(BINS); do rm -f $(DESTDIR)$(BINDIR)/$$b; done
	rm -f $(DESTDIR)$(UNITDIR)/diatom-central.service $(DESTDIR)$(UNITDIR)/diatom-client.service

bench:
	$(CARGO) run --release -p diatom-bench --bin proto_bench
	$(CARGO) run --release -p diatom-bench --bin trace_bench
	$(CARGO) run --release -p diatom-bench --bin net_bench

clean:
	$(CARGO) clean
