/* A stand-in for NVIDIA's management library (libnvidia-ml.so.1) on an emulated GPU node: the
 * few entry points Ray's NVML binding calls to count a node's GPUs and name their model
 * (ray/_private/thirdparty/pynvml: nvmlInitWithFlags, nvmlDeviceGetCount_v2,
 * nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetName, nvmlShutdown). It counts the node's GPU
 * device files (/dev/nvidia0, /dev/nvidia1, ...; the emulated node makes those its site's
 * documentation lists) and names every GPU MODEL; anything else is "not supported".
 * Apptainer's --nv finds it as it finds the real one: by name in the host's ld.so cache
 * (nvliblist.conf). */
#include <glob.h>
#include <stdio.h>
#include <string.h>

#ifndef MODEL
#define MODEL "NVIDIA A100-SXM4-40GB"
#endif

enum { NVML_SUCCESS = 0, NVML_ERROR_INVALID_ARGUMENT = 2, NVML_ERROR_NOT_SUPPORTED = 3,
       NVML_ERROR_INSUFFICIENT_SIZE = 7 };

typedef struct device { unsigned int index; } *nvmlDevice_t;
static struct device devices[64];

static unsigned int count_devices(void) {
    glob_t found;
    unsigned int count = 0;
    if (glob("/dev/nvidia[0-9]*", 0, NULL, &found) == 0) {
        count = (unsigned int)found.gl_pathc;
        globfree(&found);
    }
    return count > 64 ? 64 : count;
}

int nvmlInitWithFlags(unsigned int flags) { (void)flags; return NVML_SUCCESS; }
int nvmlInit_v2(void) { return NVML_SUCCESS; }
int nvmlInit(void) { return NVML_SUCCESS; }
int nvmlShutdown(void) { return NVML_SUCCESS; }

int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = count_devices();
    return NVML_SUCCESS;
}
int nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!device || index >= count_devices()) return NVML_ERROR_INVALID_ARGUMENT;
    devices[index].index = index;
    *device = &devices[index];
    return NVML_SUCCESS;
}
int nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

int nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    if (!device || !name) return NVML_ERROR_INVALID_ARGUMENT;
    if (length < sizeof(MODEL)) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(name, MODEL);
    return NVML_SUCCESS;
}

const char *nvmlErrorString(int result) {
    return result == NVML_SUCCESS ? "Success" : "Not Supported (rayhpc NVML stand-in)";
}
