# Generates a C file holding the Metal library source as one string (run with cmake -P):
#   -DOUT=file.c -DDIR=kernels/metal -DSOURCES=a.metal,b.metal
# The local #includes (msl_params.h, msl_common.h) are pasted in place, since a library
# compiled from a string cannot reach files; both headers are guarded, so pasting each one
# once per .metal file is harmless.
set(text "")
string(REPLACE "," ";" sources "${SOURCES}")
foreach(src ${sources})
  file(READ "${DIR}/${src}" body)
  foreach(hdr msl_params.h msl_common.h)
    file(READ "${DIR}/${hdr}" hbody)
    string(REPLACE "#include \"${hdr}\"" "${hbody}" body "${body}")
  endforeach()
  string(APPEND text "// ---- ${src} ----\n${body}\n")
endforeach()
string(REPLACE "\\" "\\\\" text "${text}")
string(REPLACE "\"" "\\\"" text "${text}")
string(REPLACE "\n" "\\n\"\n\"" text "${text}")
file(WRITE "${OUT}.tmp" "/* generated from the kernels/metal .metal files by embed_msl.cmake: do not edit */\n"
  "extern const char strata_metal_source[];\n"
  "const char strata_metal_source[] =\n\"${text}\";\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
