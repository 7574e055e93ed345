import sys
n = int(sys.argv[1])
out = ["use std::hint::black_box;"]
for k in range(n):
    out.append(f"""#[inline(never)] pub fn f{k}(x: u64) -> u64 {{
    let mut a = x ^ {k * 2654435761 % 1000003};
    for i in 0..{k % 7 + 3} {{
        a = a.wrapping_mul(6364136223846793005).wrapping_add(i as u64 ^ {k});
        match a % 5 {{ 0 => a ^= a >> 13, 1 => a = a.rotate_left({k % 31 + 1}), 2 => a = a.wrapping_sub({k}), _ => a ^= 0x9E3779B97F4A7C15 }}
    }}
    a
}}""")
out.append("static FNS: [fn(u64) -> u64; %d] = [%s];" % (n, ", ".join(f"f{k}" for k in range(n))))
out.append("fn main() { let mut acc = 0u64; for f in FNS.iter() { acc = acc.wrapping_add(f(black_box(acc))); } println!(\"{}\", acc); }")
print("\n".join(out))
