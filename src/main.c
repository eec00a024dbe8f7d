#include <stdio.h>
int main(void) { puts("slicegpt-stream"); return 0; }
