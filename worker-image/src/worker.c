/* worker.c: take one task from RabbitMQ, run it, acknowledge it, exit. */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "jobpool-worker: not built yet\n");
    return 1;
}
