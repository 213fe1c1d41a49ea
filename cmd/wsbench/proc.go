package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// procSample is what /proc says about the server process at one moment.
type procSample struct {
	At     time.Time
	RSSKiB int64         // VmRSS
	CPU    time.Duration // utime + stime
	SyscW  int64         // write(2)-family calls so far (syscw of /proc/PID/io); -1 when unreadable
	WChar  int64         // bytes written by them so far (wchar); -1 when unreadable
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every Linux
// architecture Go supports (the kernel fixes it for user space).
const clockTick = 10 * time.Millisecond

// sampleProc reads /proc/PID/status and /proc/PID/stat.
func sampleProc(pid int) (procSample, error) {
	s := procSample{At: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	if s.RSSKiB, err = parseVmRSS(status); err != nil {
		return s, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	if s.CPU, err = parseStatCPU(stat); err != nil {
		return s, err
	}
	s.SyscW, s.WChar = -1, -1 // /proc/PID/io needs the right to trace the process (same user, or root)
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		if v, err := parseSyscW(io); err == nil {
			s.SyscW = v
		}
		if v, err := parseIOField(io, "wchar:"); err == nil {
			s.WChar = v
		}
	}
	return s, nil
}

// parseSyscW returns syscw from the text of /proc/PID/io.
func parseSyscW(io []byte) (int64, error) { return parseIOField(io, "syscw:") }

// parseIOField returns the field named key ("wchar:") from the text of /proc/PID/io.
func parseIOField(io []byte, key string) (int64, error) {
	for _, line := range bytes.Split(io, []byte{'\n'}) {
		if rest, ok := bytes.CutPrefix(line, []byte(key)); ok {
			return strconv.ParseInt(string(bytes.TrimSpace(rest)), 10, 64)
		}
	}
	return 0, errors.New("no " + key + " line in /proc/PID/io")
}

// parseVmRSS returns VmRSS in KiB from the text of /proc/PID/status.
func parseVmRSS(status []byte) (int64, error) {
	for _, line := range bytes.Split(status, []byte{'\n'}) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(string(f[0]), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS line in /proc/PID/status")
}

// parseStatCPU returns utime+stime from the text of /proc/PID/stat. The command name (field 2)
// is in parentheses and may hold spaces, so fields are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * clockTick, nil
}

// raiseNoFile raises this process's RLIMIT_NOFILE soft limit to its hard limit and returns it.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}

// selfCPU is the CPU time (user + system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostCPU returns the busy CPU time of the whole machine (all cores) from /proc/stat: user,
// nice, system, irq, softirq and steal. ok is false where /proc/stat is unreadable.
func hostCPU() (busy time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	d, err := parseHostCPU(b)
	return d, err == nil
}

// hostCores is the machine's CPU count from /proc/stat (runtime.NumCPU counts only the CPUs
// this process may run on, one under taskset -c 1), or NumCPU where /proc/stat is unreadable.
func hostCores() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return runtime.NumCPU()
	}
	if n := countCPULines(b); n > 0 {
		return n
	}
	return runtime.NumCPU()
}

// countCPULines counts the per-CPU lines (cpu0, cpu1, ...) of /proc/stat.
func countCPULines(stat []byte) int {
	n := 0
	for _, line := range bytes.Split(stat, []byte{'\n'}) {
		if len(line) > 3 && bytes.HasPrefix(line, []byte("cpu")) && line[3] >= '0' && line[3] <= '9' {
			n++
		}
	}
	return n
}

// parseHostCPU parses the "cpu" line of /proc/stat.
func parseHostCPU(stat []byte) (time.Duration, error) {
	line, _, _ := bytes.Cut(stat, []byte{'\n'})
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, errors.New("no cpu line in /proc/stat")
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
		v, err := strconv.ParseInt(string(f[i]), 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return time.Duration(ticks) * clockTick, nil
}
