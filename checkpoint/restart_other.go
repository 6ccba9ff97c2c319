//go:build !amd64

package checkpoint

// restartSemEINTR restarts an interrupted semop only on x86-64; elsewhere
// a thread that enters semop between the look and its stop sees EINTR.
func restartSemEINTR(tid int) {}
