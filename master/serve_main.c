/* strata-serve: the HTTP server alone (the same as `strata-master --serve ...`). */
#include "master/http.h"

int main(int argc, char **argv) { return http_main(argc, argv); }
