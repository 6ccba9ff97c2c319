package checkpoint

// WaitStopped is waitStopped, for the external tests that stop a process
// themselves.
var WaitStopped = waitStopped
