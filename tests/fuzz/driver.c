/*-------------------------------------------------------------------------
 *
 * driver.c
 *	  A small, dependency-free mutation fuzzer driver for the rvbbit parser
 *	  fuzz targets, used when libFuzzer is not available.
 *
 * Each fuzz target defines LLVMFuzzerTestOneInput().  Built with clang
 * -fsanitize=fuzzer the target runs under libFuzzer; built with this driver
 * (gcc or clang, with -fsanitize=address,undefined) it runs every seed file
 * given on the command line, then random mutations of them (bit flips,
 * byte insertions and deletions, splices, dictionary tokens) for a bounded
 * number of iterations or seconds, whichever comes first.
 *
 * Usage: fuzz_X [-runs=N] [-max_total_time=S] [-seed=N] [-dict=FILE] seed...
 * Exit status 0 when no input crashed (a crash aborts under the sanitizers).
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 65536
#define MAX_SEEDS 256
#define MAX_DICT 512

static unsigned char *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS];
static int	nseeds;
static char *dict[MAX_DICT];
static int	ndict;
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static unsigned char *
read_file(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	unsigned char *buf;

	if (f == NULL)
		return NULL;
	buf = malloc(MAX_INPUT);
	*len = fread(buf, 1, MAX_INPUT, f);
	fclose(f);
	return buf;
}

static void
load_dict(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[512];

	if (f == NULL)
		return;
	while (ndict < MAX_DICT && fgets(line, sizeof(line), f))
	{
		char	   *a = strchr(line, '"');
		char	   *b = a ? strrchr(line, '"') : NULL;

		if (a == NULL || b == NULL || b <= a + 1)
			continue;
		*b = '\0';
		dict[ndict++] = strdup(a + 1);
	}
	fclose(f);
}

/* Apply 1..4 random mutations to buf (capacity MAX_INPUT), returning new length. */
static size_t
mutate(unsigned char *buf, size_t len)
{
	int			n = 1 + (int) (rng() % 4);

	while (n-- > 0)
	{
		size_t		pos = len ? (size_t) (rng() % len) : 0;

		switch (rng() % 7)
		{
			case 0:				/* flip a bit */
				if (len)
					buf[pos] ^= (unsigned char) (1u << (rng() % 8));
				break;
			case 1:				/* random byte */
				if (len)
					buf[pos] = (unsigned char) rng();
				break;
			case 2:				/* delete a range */
				if (len)
				{
					size_t		k = 1 + rng() % 8;

					if (pos + k > len)
						k = len - pos;
					memmove(buf + pos, buf + pos + k, len - pos - k);
					len -= k;
				}
				break;
			case 3:				/* insert a byte */
				if (len < MAX_INPUT)
				{
					memmove(buf + pos + 1, buf + pos, len - pos);
					buf[pos] = "{}[]()'\"$%|:-\n \\#*,."[rng() % 21];
					len++;
				}
				break;
			case 4:				/* dictionary token */
				if (ndict > 0)
				{
					const char *t = dict[rng() % ndict];
					size_t		tl = strlen(t);

					if (len + tl < MAX_INPUT)
					{
						memmove(buf + pos + tl, buf + pos, len - pos);
						memcpy(buf + pos, t, tl);
						len += tl;
					}
				}
				break;
			case 5:				/* splice from another seed */
				if (nseeds > 0)
				{
					int			s = (int) (rng() % nseeds);
					size_t		from,
								k;

					if (seed_len[s] == 0)
						break;
					from = rng() % seed_len[s];
					k = 1 + rng() % 32;
					if (from + k > seed_len[s])
						k = seed_len[s] - from;
					if (len + k < MAX_INPUT)
					{
						memmove(buf + pos + k, buf + pos, len - pos);
						memcpy(buf + pos, seeds[s] + from, k);
						len += k;
					}
				}
				break;
			default:			/* duplicate a range */
				if (len && len < MAX_INPUT / 2)
				{
					size_t		k = 1 + rng() % 16;

					if (pos + k > len)
						k = len - pos;
					memmove(buf + pos + k, buf + pos, len - pos);
					len += k;
				}
				break;
		}
	}
	return len;
}

int
main(int argc, char **argv)
{
	long		runs = 20000;
	long		max_time = 10;
	long		i;
	time_t		start = time(NULL);
	unsigned char *buf = malloc(MAX_INPUT + 1);
	int			a;

	for (a = 1; a < argc; a++)
	{
		if (strncmp(argv[a], "-runs=", 6) == 0)
			runs = atol(argv[a] + 6);
		else if (strncmp(argv[a], "-max_total_time=", 16) == 0)
			max_time = atol(argv[a] + 16);
		else if (strncmp(argv[a], "-seed=", 6) == 0)
			rng_state = (uint64_t) atoll(argv[a] + 6) * 2654435761ULL + 1;
		else if (strncmp(argv[a], "-dict=", 6) == 0)
			load_dict(argv[a] + 6);
		else if (argv[a][0] == '-')
			continue;
		else if (nseeds < MAX_SEEDS)
		{
			size_t		len;
			unsigned char *s = read_file(argv[a], &len);

			if (s != NULL)
			{
				seeds[nseeds] = s;
				seed_len[nseeds++] = len;
			}
		}
	}

	/* every seed as it is first */
	for (a = 0; a < nseeds; a++)
		LLVMFuzzerTestOneInput(seeds[a], seed_len[a]);

	for (i = 0; i < runs; i++)
	{
		size_t		len = 0;

		if (nseeds > 0)
		{
			int			s = (int) (rng() % nseeds);

			memcpy(buf, seeds[s], seed_len[s]);
			len = seed_len[s];
		}
		len = mutate(buf, len);
		LLVMFuzzerTestOneInput(buf, len);
		if ((i & 255) == 0 && time(NULL) - start >= max_time)
			break;
	}
	printf("fuzz: %ld runs over %d seeds in %ld s, no crash\n",
		   i, nseeds, (long) (time(NULL) - start));
	free(buf);
	return 0;
}
