# SPDX-License-Identifier: MIT
"""gdb commands for libfiber's fibers, in a live process or a core file.

    source scripts/gdb/libfiber.py

  info fibers          one line per fiber: id, name, state, and where it
                       is stopped (its first frame outside libfiber)
  fiber ID             selects fiber ID's frames: frame, up, down,
                       info locals, bt... work on them
  fiber                says which fiber is selected, or runs on the thread
  fiber none           back to the thread's own frames
  fiber bt ID [ARGS]   fiber ID's backtrace; ARGS go to backtrace (full, -3)

ID is a fiber's id (fiber_id(), as fiber_dump() prints it) or any
expression, without spaces, whose value is one. Needs gdb 12 or later.

How a fiber's frames reach gdb. A fiber that runs is its worker thread:
selecting it selects that thread. A fiber switched out has no thread; its
registers are in memory, where fiber_switch() saved the callee-saved ones
(the switch frame, libfiber/arch/*/frame.h), or, when it was preempted,
where the upcall trampoline saved all of them (struct fiber_upcall_frame).
gdb can set a live thread's registers but not a core file's, so neither is
done: an unwinder claims frame 0 of the selected thread and names the
fiber's registers as its caller's. Frame 1 and up are then the fiber's,
unwound by gdb's own DWARF unwinder (locals, inline frames, tail calls),
and frame 0, still the thread's, is left out of backtraces. A preempted
fiber is entered one frame early, in the trampoline, right after its call
to fiber_upcall_handler: the trampoline's CFI marks a signal frame, so gdb
takes the frame above it for the interrupted instruction itself (a plain
caller's pc would be read as a return address, one byte before).
"""

import re
import struct
import time

import gdb
import gdb.unwinder

# fiber_dump()'s names of the I/O calls a fiber waits in, by IORING_OP_*
# number (the kernel's ABI). States and waits are named by libfiber's own
# debug info.
_IO_OPS = {1: "readv", 2: "writev", 3: "fsync", 6: "poll", 9: "sendmsg", 10: "recvmsg",
           13: "accept", 16: "connect", 18: "openat", 19: "close", 22: "read", 23: "write",
           26: "send", 27: "recv"}
_MAX_FIBERS = 1 << 20
_MAX_WHERE_FRAMES = 64


def _u64s(addr, n):
    data = gdb.selected_inferior().read_memory(addr, 8 * n)
    return struct.unpack("<%dQ" % n, data)


class _X86_64:
    pc, sp = "rip", "rsp"

    @staticmethod
    def switch_registers(sp):
        # frame.h: mxcsr+fcw, r15, r14, r13, r12, rbx, rbp, return address.
        s = _u64s(sp, 8)
        return {"rip": s[7], "rsp": sp + 64, "r15": s[1], "r14": s[2], "r13": s[3],
                "r12": s[4], "rbx": s[5], "rbp": s[6]}

    @staticmethod
    def trampoline_registers(frame, resume_pc):
        # From its call on, the trampoline's CFA is %rbx, the frame's base;
        # its %rsp, lower, past the XSAVE area, is no rule's input.
        return {"rip": resume_pc, "rsp": frame, "rbx": frame}


class _AArch64:
    pc, sp = "pc", "sp"

    @staticmethod
    def switch_registers(sp):
        # frame.h: x19 ... x28, x29, x30 (the return address), then d8-d15 and
        # fpcr, left out: gdb shows what lived in d8-d15 as optimized out.
        s = _u64s(sp, 12)
        regs = {"x%d" % (19 + i): s[i] for i in range(12)}
        regs.update({"pc": s[11], "sp": sp + 176})
        return regs

    @staticmethod
    def trampoline_registers(frame, resume_pc):
        # The trampoline's CFA is SP + 12 KiB: SP is the frame's base.
        return {"pc": resume_pc, "sp": frame}


def _arch():
    name = gdb.selected_inferior().architecture().name()
    if name == "i386:x86-64":
        return _X86_64
    if name.startswith("aarch64"):
        return _AArch64
    raise gdb.GdbError("libfiber.py: %s is not an architecture libfiber runs on" % name)


def _registry():
    sym = gdb.lookup_static_symbol("fiber_registry")
    if sym is None:
        raise gdb.GdbError("libfiber.py: no fiber_registry: is libfiber loaded, with its "
                           "symbols?")
    return sym.value()


def _now_ns():
    """CLOCK_MONOTONIC of the process: ours, if it runs on this machine."""
    conn = gdb.selected_inferior().connection
    if conn is None or conn.type != "native":
        return None
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class _Fiber:
    """A snapshot of one struct fiber, and of the worker that runs it."""

    def __init__(self, value, running_on):
        self.address = int(value.address)
        self.id = int(value["id"])
        raw = bytes(gdb.selected_inferior().read_memory(value["name"].address,
                                                        value["name"].type.sizeof))
        self.name = raw.split(b"\0")[0].decode(errors="replace")
        self.state = str(value["state"])
        self.runs = int(value["stats"]["runs"])
        self.upcall_frame = int(value["upcall_frame"])
        self.sp = int(value["sp"])
        self.worker = running_on.get(self.address)
        self._value = value

    def has_frames(self):
        return self.state != "FIBER_DONE" and self.runs > 0

    def state_text(self):
        """The state in fiber_dump()'s words."""
        f = self._value
        if self.worker is not None:
            index, thread = self.worker
            where = " (thread %d)" % thread.num if thread else ""
            return "running on worker %d%s" % (index, where)
        if self.state == "FIBER_DONE":
            return "returned, not joined"
        if self.state == "FIBER_RUNNABLE" and not self.runs:
            return "runnable, not started"
        if self.state == "FIBER_RUNNABLE" and self.upcall_frame:
            return "preempted, runnable"
        wait = int(f["wait"])
        obj = int(f["wait_obj"])
        if wait == _enum("FIBER_WAIT_JOIN"):
            return "blocked in join of fiber %d" % _fiber_id_at(obj)
        if wait == _enum("FIBER_WAIT_SLEEP"):
            now = _now_ns()
            if now is None:
                return "blocked in sleep"
            left = max(int(f["wake_ns"]) - now, 0)
            return "blocked in sleep, %d.%03d ms left" % (left // 1000000, left // 1000 % 1000)
        if wait == _enum("FIBER_WAIT_IO"):
            return "blocked in %s on fd %d" % (_IO_OPS.get(int(f["wait_op"]), "I/O"),
                                               int(f["wait_fd"]))
        if wait == _enum("FIBER_WAIT_MUTEX"):
            return "blocked on fiber mutex %#x" % obj
        if wait == _enum("FIBER_WAIT_COND"):
            return "blocked on fiber condition %#x" % obj
        if wait == _enum("FIBER_WAIT_LOCK"):
            # It yields until the lock is free: runnable meanwhile.
            return "waiting for lock %#x" % obj
        return "blocked" if self.state == "FIBER_BLOCKED" else "runnable"

    def registers(self):
        """Its registers, switched out: {gdb register name: value}."""
        arch = _arch()
        if self.upcall_frame:
            return arch.trampoline_registers(self.upcall_frame, _trampoline_resume_pc())
        return arch.switch_registers(self.sp)


def _enum(name):
    return int(gdb.parse_and_eval(name))


def _fiber_id_at(address):
    if not address:
        return 0
    fiber = gdb.lookup_type("struct fiber").pointer()
    try:
        return int(gdb.Value(address).cast(fiber).dereference()["id"])
    except gdb.MemoryError:
        return 0


def _trampoline_resume_pc():
    """Where fiber_upcall_handler() returns to in the upcall trampoline."""
    entry = int(gdb.parse_and_eval("&fiber_upcall_entry").cast(
        gdb.lookup_type("unsigned long")))
    arch = gdb.selected_inferior().architecture()
    for insn in arch.disassemble(entry, count=256):
        if "<fiber_upcall_handler" in insn["asm"]:
            return insn["addr"] + insn["length"]
    raise gdb.GdbError("libfiber.py: no call to fiber_upcall_handler in fiber_upcall_entry")


def _threads_by_tid():
    return {t.ptid[1]: t for t in gdb.selected_inferior().threads()}


def _fibers():
    """Every fiber in the registry, by id."""
    reg = _registry()
    running_on = {}
    workers = reg["workers"]
    if int(workers):
        threads = _threads_by_tid()
        for i in range(int(reg["nr_workers"])):
            w = workers[i]
            current = int(w["current"])
            if current:
                running_on[current] = (i, threads.get(int(w["tid"])))
    fibers = []
    seen = set()
    node = reg["head"]
    while int(node) and int(node) not in seen and len(seen) < _MAX_FIBERS:
        seen.add(int(node))
        fibers.append(_Fiber(node.dereference(), running_on))
        node = node["all_next"]
    return sorted(fibers, key=lambda f: f.id)


def _current_fiber_id(fibers):
    """The selected fiber, or the one running on the selected thread."""
    if _selection is not None and _selection.applies():
        return _selection.fiber.id
    thread = gdb.selected_thread()
    for f in fibers:
        if f.worker is not None and f.worker[1] == thread:
            return f.id
    return None


def _find_fiber(arg):
    try:
        wanted = int(gdb.parse_and_eval(arg))
    except gdb.error as e:
        raise gdb.GdbError("fiber: %s is not a fiber id: %s" % (arg, e))
    for f in _fibers():
        if f.id == wanted:
            return f
    raise gdb.GdbError("No fiber %d." % wanted)


class _Selection:
    """The fiber whose registers stand in for the caller of a thread's frame 0."""

    def __init__(self, fiber, thread):
        self.fiber = fiber
        self.thread = thread
        self.registers = fiber.registers()
        # Frame 0's id: below the fiber's frames, so gdb takes frame 1 for its caller.
        self.frame0_sp = fiber.upcall_frame or fiber.sp

    def applies(self):
        thread = gdb.selected_thread()
        return (thread is not None and self.thread.is_valid() and
                thread.inferior.num == self.thread.inferior.num and
                thread.ptid == self.thread.ptid)


_selection = None


def _select(selection):
    global _selection
    _selection = selection
    gdb.invalidate_cached_frames()


class _FrameId:
    def __init__(self, sp, pc):
        self.sp = gdb.Value(sp)
        self.pc = pc


class _FiberUnwinder(gdb.unwinder.Unwinder):
    def __init__(self):
        super().__init__("libfiber")

    def __call__(self, pending_frame):
        sel = _selection
        if sel is None or pending_frame.level() != 0 or not sel.applies():
            return None
        arch = _arch()
        pc = pending_frame.read_register(arch.pc)
        info = pending_frame.create_unwind_info(_FrameId(sel.frame0_sp, pc))
        for name, value in sel.registers.items():
            reg_type = pending_frame.read_register(name).type
            info.add_saved_register(name, gdb.Value(value).cast(reg_type))
        return info


class _HideThreadFrame:
    """Backtraces of a selected fiber leave out frame 0, the thread's own."""

    def __init__(self):
        self.name = "libfiber"
        self.priority = 100
        self.allowed = True

    @property
    def enabled(self):
        # Only then: a frame filter changes how gdb prints every backtrace.
        return self.allowed and _selection is not None and _selection.applies()

    @enabled.setter
    def enabled(self, allowed):
        self.allowed = allowed

    def filter(self, frames):
        return (f for f in frames if f.inferior_frame().level() != 0)


def _libfiber_ranges():
    """The address ranges of libfiber's code: its own section, libfiber_text."""
    text = gdb.execute("info files", to_string=True)
    return [(int(lo, 16), int(hi, 16)) for lo, hi in
            re.findall(r"(0x[0-9a-f]+) - (0x[0-9a-f]+) is libfiber_text\b", text)]


def _program_frame(frame, ranges):
    """The first frame from frame on that is neither libfiber's nor a signal's."""
    for _ in range(_MAX_WHERE_FRAMES):
        if frame is None:
            return None
        pc = frame.pc()
        if frame.type() in (gdb.NORMAL_FRAME, gdb.INLINE_FRAME) and \
                not any(lo <= pc < hi for lo, hi in ranges):
            return frame
        frame = frame.older()
    return None


def _describe(frame):
    name = frame.name() or "??"
    sal = frame.find_sal()
    if sal.symtab:
        return "%s at %s:%d" % (name, sal.symtab.filename, sal.line)
    lib = gdb.solib_name(frame.pc())
    return "%s from %s" % (name, lib) if lib else name


class _Saved:
    """The thread, frame and fiber selected before a command looks elsewhere."""

    def __init__(self):
        self.selection = _selection
        self.thread = gdb.selected_thread()
        try:
            self.frame = gdb.selected_frame()
        except gdb.error:
            self.frame = None

    def restore(self):
        _select(self.selection)
        if self.thread is not None and self.thread.is_valid():
            self.thread.switch()
        if self.frame is not None and self.frame.is_valid():
            self.frame.select()


def _show(fiber, ranges):
    """Makes fiber's frames those gdb shows; returns its first program frame."""
    if fiber.worker is not None:
        thread = fiber.worker[1]
        if thread is None:
            raise gdb.GdbError("Fiber %d runs on worker %d, whose thread gdb does not see."
                               % (fiber.id, fiber.worker[0]))
        _select(None)
        thread.switch()
        first = gdb.newest_frame()
    elif not fiber.has_frames():
        raise gdb.GdbError("Fiber %d has no frames: %s." % (fiber.id, fiber.state_text()))
    else:
        thread = gdb.selected_thread()
        if thread is None:
            raise gdb.GdbError("No thread selected.")
        _select(_Selection(fiber, thread))
        first = gdb.newest_frame().older()
    return _program_frame(first, ranges) or first


def _title(fiber):
    name = ' "%s"' % fiber.name if fiber.name else ""
    return '%d%s (%s)' % (fiber.id, name, fiber.state_text())


class _InfoFibers(gdb.Command):
    """Every fiber: id, name, state, and where it is stopped.

The place is its first frame outside libfiber. * marks the selected
fiber, or the one running on the selected thread."""

    def __init__(self):
        super().__init__("info fibers", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        fibers = _fibers()
        if not fibers:
            print("No fibers.")
            return
        current = _current_fiber_id(fibers)
        ranges = _libfiber_ranges()
        saved = _Saved()
        rows = [("", "Id", "Name", "State", "Where")]
        try:
            for f in fibers:
                where = ""
                if f.has_frames():
                    try:
                        where = _describe(_show(f, ranges))
                    except (gdb.error, gdb.GdbError) as e:
                        where = "<error: %s>" % e
                mark = "*" if f.id == current else ""
                rows.append((mark, str(f.id), f.name, f.state_text(), where))
        finally:
            saved.restore()
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths + [0])).rstrip())


class _FiberCommand(gdb.Command):
    """Select a fiber's frames: fiber ID. fiber none: the thread's own again.

Without an argument, says which fiber is selected, or runs on the
selected thread. ID is a fiber's id, or an expression whose value is one.
A fiber that runs is its worker's thread, which is selected. Another's
frames start at frame 1 of the selected thread (frame 0 stays the
thread's own), and the first of them outside libfiber is selected.
Running the program drops the selection: the fiber may have moved."""

    def __init__(self):
        super().__init__("fiber", gdb.COMMAND_STACK, prefix=True)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        if not arg:
            fibers = _fibers()
            current = _current_fiber_id(fibers)
            for f in fibers:
                if f.id == current:
                    print("[Current fiber is %s]" % _title(f))
                    return
            print("No fiber selected, and none runs on this thread.")
            return
        if arg == "none":
            _select(None)
            gdb.execute("frame", from_tty)
            return
        fiber = _find_fiber(arg)
        frame = _show(fiber, _libfiber_ranges())
        frame.select()
        print("[Switching to fiber %s]" % _title(fiber))
        gdb.execute("frame", from_tty)


class _FiberBt(gdb.Command):
    """Backtrace of a fiber: fiber bt ID [backtrace arguments].

Its frames are numbered as after "fiber ID": from 1 for a fiber switched
out, and a preempted one shows the trampoline as <signal handler called>,
then the interrupted instruction."""

    def __init__(self):
        super().__init__("fiber bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        argv = arg.split(None, 1)
        if not argv:
            raise gdb.GdbError("usage: fiber bt ID [backtrace arguments]")
        fiber = _find_fiber(argv[0])
        saved = _Saved()
        try:
            _show(fiber, _libfiber_ranges())
            print("Fiber %s:" % _title(fiber))
            gdb.execute("backtrace " + (argv[1] if len(argv) > 1 else ""), from_tty)
        finally:
            saved.restore()


def _on_resume(event):
    # The fiber may run, move or return: its saved registers no longer hold.
    global _selection
    _selection = None


gdb.unwinder.register_unwinder(None, _FiberUnwinder(), replace=True)
gdb.frame_filters["libfiber"] = _HideThreadFrame()
gdb.events.cont.connect(_on_resume)
_InfoFibers()
_FiberCommand()
_FiberBt()
