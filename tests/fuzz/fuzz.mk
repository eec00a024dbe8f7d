# GNU make file for the fuzz targets, run by `make fuzz` (tests/fuzz/fuzz.am),
# which passes the library's sources and flags. The library is compiled again
# with clang and the sanitizers into its own archive under tests/fuzz/obj, so
# the normal (gcc) build is left alone. Without CUDA code: the stub backend.
FUZZ_CC ?= clang
FUZZ_SAN ?= -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS ?= -g -O1 -fno-omit-frame-pointer
OBJDIR = tests/fuzz/obj
LIB_SRCS = $(filter %.c,$(SG_FUZZ_SRCS)) src/backend/backend_stub.c
LIB_SRCS := $(sort $(filter-out %.cu,$(LIB_SRCS)))
LIB_OBJS = $(patsubst %.c,$(OBJDIR)/%.o,$(LIB_SRCS))
TARGETS = $(patsubst %,tests/fuzz/fuzz_%,$(SG_FUZZ_TARGETS))
CFLAGS_ALL = -std=gnu11 $(FUZZ_CFLAGS) $(FUZZ_SAN) $(SG_FUZZ_CPPFLAGS) \
	-I$(srcdir)/tests/fuzz -w

all: $(TARGETS)

$(OBJDIR)/%.o: $(srcdir)/%.c
	@mkdir -p $(dir $@)
	@echo "  FUZZCC   $@"
	@$(FUZZ_CC) $(CFLAGS_ALL) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

$(OBJDIR)/libslicegpt-fuzz.a: $(LIB_OBJS)
	@rm -f $@
	@ar rcs $@ $^

tests/fuzz/fuzz_%: $(srcdir)/tests/fuzz/fuzz_%.c $(srcdir)/tests/fuzz/fuzz_common.h \
		$(OBJDIR)/libslicegpt-fuzz.a
	@echo "  FUZZLD   $@"
	@$(FUZZ_CC) $(CFLAGS_ALL) -fsanitize=fuzzer -o $@ $< $(OBJDIR)/libslicegpt-fuzz.a \
		$(SG_FUZZ_LIBS)

-include $(LIB_OBJS:.o=.d)
.PHONY: all
