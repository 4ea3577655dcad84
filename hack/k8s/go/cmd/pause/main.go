// pause: the pod sandbox's process; it waits for a signal and exits (the role of
// registry.k8s.io/pause, which no registry serves here).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		// As PID 1 of the sandbox it also reaps children.
		child := make(chan os.Signal, 1)
		signal.Notify(child, syscall.SIGCHLD)
		for range child {
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}()
	<-signals
}
