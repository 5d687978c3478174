/* main.c: flags, signals and wiring. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("jobpool-controller %s\n", JP_VERSION);
        return 0;
    }
    fprintf(stderr, "jobpool-controller: not wired yet\n");
    return 1;
}
