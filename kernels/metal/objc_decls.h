/* Declarations of the Objective-C runtime and Metal entry points that metal_backend.c uses,
 * for compiling it on machines without Apple's SDK (the CI compile check; never linked). They
 * mirror <objc/objc.h>, <objc/runtime.h> and <objc/message.h> as they are on arm64 macOS,
 * where objc_msgSend is declared without a prototype so every call must cast it to the
 * method's exact type. Used only when __APPLE__ is not defined. */
#ifndef STRATA_OBJC_DECLS_H
#define STRATA_OBJC_DECLS_H

#if defined(__APPLE__)
#error "objc_decls.h stands in for Apple's headers; on Apple include <objc/runtime.h> and <objc/message.h>"
#endif

#include <stdbool.h>

typedef struct objc_object *id;
typedef struct objc_selector *SEL;
typedef struct objc_class *Class;
typedef bool BOOL; /* arm64: BOOL is bool */
typedef unsigned long NSUInteger;
typedef long NSInteger;

#define nil ((id)0)
#define YES ((BOOL)1)
#define NO ((BOOL)0)

SEL sel_registerName(const char *name);
Class objc_getClass(const char *name);
void objc_msgSend(void);

#endif
