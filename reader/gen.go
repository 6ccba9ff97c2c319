package reader

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v2" -target bpfel -type semundo_task -type semundo_entry -type semundo_chunk -type semundo_wait iter bpf/semundo.bpf.c -- -I./bpf
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type semundo_batch openiter bpf/openiter.bpf.c -- -I./bpf
