package reader

// Mirrors of the #defines in bpf/records.h; TestRecordConstants keeps them
// equal.
const (
	iterSemundoMaxNsems     = 65535
	iterSemundoTaskOwner    = 1
	iterSemundoRecEntry     = 1
	iterSemundoRecEnd       = 2
	iterSemundoEntryNoset   = 1
	iterSemundoEntryToobig  = 2
	iterSemundoEndTruncated = 1
	iterSemundoEndUnstable  = 2
	iterSemundoEndLost      = 4
)
