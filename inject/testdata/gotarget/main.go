// Command gotarget is a target for the inject tests: a Go program whose
// goroutines keep counting on several runtime threads. Each SIGUSR1 makes it
// print the counters on one line; SIGTERM ends it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	var counters [4]atomic.Uint64
	for i := 0; i < 3; i++ {
		go func() {
			for {
				if counters[i].Add(1)%(1<<20) == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	go func() {
		for {
			time.Sleep(time.Millisecond)
			counters[3].Add(1)
		}
	}()
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM)
	fmt.Println("ready")
	for s := range sig {
		if s == syscall.SIGTERM {
			return
		}
		fmt.Println("counters", counters[0].Load(), counters[1].Load(), counters[2].Load(), counters[3].Load())
	}
}
