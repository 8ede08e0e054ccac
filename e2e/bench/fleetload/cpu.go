package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc: USER_HZ, 100 on every
// architecture Linux runs on today (getconf CLK_TCK), whatever the kernel's HZ.
const userHZ = 100

// cpuCommand is `fleetload cpu`: every --every it prints one line, the time
// (Unix nanoseconds), the CPU seconds (utime+stime) of each of --pids, and
// the CPU seconds the machine has been busy, until it is stopped. A rollout
// step starts when the control plane decides, and the bench learns the time
// only afterwards (the rollout's step_started_at); these lines give the
// control plane's CPU at that time without asking it anything meanwhile.
func cpuCommand(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("cpu", flag.ContinueOnError)
	pidsFlag := fs.String("pids", "", "process `ids` to sample, comma separated")
	every := fs.Duration("every", 20*time.Millisecond, "sampling interval")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var pids []int
	for _, f := range strings.Split(*pidsFlag, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p <= 0 {
			return fmt.Errorf("--pids: %q is not a process id", f)
		}
		pids = append(pids, p)
	}
	if *every <= 0 {
		return errors.New("--every must be positive")
	}
	t := time.NewTicker(*every)
	defer t.Stop()
	for {
		line, err := cpuSample(time.Now(), pids)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(out, line); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// cpuSample is one line of `fleetload cpu`.
func cpuSample(now time.Time, pids []int) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", now.UnixNano())
	for _, p := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return "", fmt.Errorf("process %d: %w", p, err)
		}
		s, err := processCPU(string(stat))
		if err != nil {
			return "", fmt.Errorf("process %d: %w", p, err)
		}
		fmt.Fprintf(&b, " %.2f", s)
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return "", err
	}
	busy, err := machineBusy(string(stat))
	if err != nil {
		return "", fmt.Errorf("/proc/stat: %w", err)
	}
	fmt.Fprintf(&b, " %.2f\n", busy)
	return b.String(), nil
}

// processCPU returns utime+stime, in seconds, from a /proc/PID/stat line.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses, so the fields are counted from the last ')'.
func processCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return float64(ticks) / userHZ, nil
}

// machineBusy returns the seconds all CPUs have been busy from /proc/stat:
// user, nice, system, irq, softirq and steal (not idle, not iowait).
func machineBusy(stat string) (float64, error) {
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] != "cpu" {
			continue
		}
		var ticks uint64
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return 0, err
			}
			ticks += n
		}
		return float64(ticks) / userHZ, nil
	}
	return 0, errors.New("no cpu line")
}

// runCPUCommand runs cpuCommand until SIGINT or SIGTERM.
func runCPUCommand(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cpuCommand(ctx, args, os.Stdout)
}
