/* procstat FILE: reads /proc/<pid>/stat of each pid listed in FILE, one per
 * line: the baseline of BenchmarkCommands, the least a command that reads a
 * per-pid proc file of every holder costs as a process of its own. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char path[64], buf[4096];
	int pid;
	FILE *f;

	if (argc != 2 || !(f = fopen(argv[1], "r")))
		return 2;
	while (fscanf(f, "%d", &pid) == 1) {
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || read(fd, buf, sizeof(buf)) <= 0)
			return 1;
		close(fd);
	}
	return 0;
}
