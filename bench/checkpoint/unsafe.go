package main

import "unsafe"

func unsafePointer(b []uint16) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
