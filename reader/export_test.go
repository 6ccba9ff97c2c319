package reader

// OpenFullWalk opens a reader whose ReadProcess walks every task, as it does on
// kernels before 6.1, whose task iterator takes no pid filter.
func OpenFullWalk() (*Reader, error) { return Open(&Options{noTaskFilter: true}) }
