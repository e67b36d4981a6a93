//! The tracer: ptrace + seccomp, a handler decides each intercepted call.
