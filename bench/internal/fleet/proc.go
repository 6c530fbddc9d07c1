package fleet

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is what the kernel accounts to one process at one moment.
type Usage struct {
	RSS, HWM int64         // resident now and at its peak, bytes
	CPU      time.Duration // user + system time so far
	IO       int64         // bytes through read(2) and write(2): for a server, mostly its sockets
}

// clockTick is USER_HZ, 100 on every Linux Go runs on.
const clockTick = 100

// ReadUsage reads /proc/<pid>/{status,stat,io}; pid 0 is this process.
func ReadUsage(pid int) (Usage, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = fmt.Sprintf("/proc/%d", pid)
	}
	var u Usage
	status, err := readFields(dir + "/status")
	if err != nil {
		return u, err
	}
	u.RSS, u.HWM = status["VmRSS"]*1024, status["VmHWM"]*1024 // in kB
	io, err := readFields(dir + "/io")
	if err != nil {
		return u, err
	}
	u.IO = io["rchar"] + io["wchar"]
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return u, err
	}
	// Fields after the command's closing parenthesis: utime is the 14th
	// field of the line, the 12th after it.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("%s/stat: %d fields", dir, len(f))
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(utime+stime) * time.Second / clockTick
	return u, nil
}

// Sub is the difference u - v of the counters; sizes stay u's.
func (u Usage) Sub(v Usage) Usage {
	u.CPU -= v.CPU
	u.IO -= v.IO
	return u
}

// readFields reads "name: value [unit]" lines into numbers.
func readFields(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if v := strings.Fields(rest); len(v) > 0 {
			if n, err := strconv.ParseInt(v[0], 10, 64); err == nil {
				out[name] = n
			}
		}
	}
	return out, sc.Err()
}

// MiB is n bytes in MiB.
func MiB(n int64) float64 { return float64(n) / (1 << 20) }
