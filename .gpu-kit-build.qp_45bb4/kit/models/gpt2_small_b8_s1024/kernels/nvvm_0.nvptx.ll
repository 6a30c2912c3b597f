; ModuleID = 'LLVMDialectModule'
source_filename = "LLVMDialectModule"

define ptx_kernel void @nvvm_0_kernel(ptr %0, ptr %1, ptr %2, ptr %3, ptr %4) #0 {
  %6 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } poison, ptr %4, 0
  %7 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %6, ptr %4, 1
  %8 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %7, i64 0, 2
  %9 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %8, i64 8, 3, 0
  %10 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %9, i64 786432, 4, 0
  %11 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %10, i64 1024, 3, 1
  %12 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %11, i64 768, 4, 1
  %13 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %12, i64 768, 3, 2
  %14 = insertvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %13, i64 1, 4, 2
  %15 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } poison, ptr %3, 0
  %16 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %15, ptr %3, 1
  %17 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %16, i64 0, 2
  %18 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %17, i64 50257, 3, 0
  %19 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %18, i64 768, 4, 0
  %20 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %19, i64 768, 3, 1
  %21 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %20, i64 1, 4, 1
  %22 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } poison, ptr %2, 0
  %23 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %22, ptr %2, 1
  %24 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %23, i64 0, 2
  %25 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %24, i64 8, 3, 0
  %26 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %25, i64 1024, 4, 0
  %27 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %26, i64 1024, 3, 1
  %28 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %27, i64 1, 4, 1
  %29 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } poison, ptr %1, 0
  %30 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %29, ptr %1, 1
  %31 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %30, i64 0, 2
  %32 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %31, i64 1024, 3, 0
  %33 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %32, i64 768, 4, 0
  %34 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %33, i64 768, 3, 1
  %35 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %34, i64 1, 4, 1
  %36 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } poison, ptr %0, 0
  %37 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %36, ptr %0, 1
  %38 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %37, i64 0, 2
  %39 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %38, i64 1, 3, 0
  %40 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %39, i64 1024, 4, 0
  %41 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %40, i64 1024, 3, 1
  %42 = insertvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %41, i64 1, 4, 1
  %43 = call range(i32 0, 24576) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %44 = sext i32 %43 to i64
  %45 = call range(i32 0, 256) i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %46 = sext i32 %45 to i64
  %47 = mul nsw i64 %44, 256
  %48 = add i64 %46, %47
  %49 = urem i64 %48, 768
  %50 = udiv i64 %48, 768
  %51 = urem i64 %50, 1024
  %52 = udiv i64 %50, 1024
  %53 = extractvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %42, 1
  %54 = add nuw nsw i64 0, %51
  %55 = getelementptr inbounds nuw i64, ptr %53, i64 %54
  %56 = load i64, ptr %55, align 4
  %57 = call i64 @llvm.smax.i64(i64 %56, i64 0)
  %58 = call i64 @llvm.smin.i64(i64 %57, i64 1023)
  %59 = extractvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %35, 1
  %60 = mul nuw nsw i64 %58, 768
  %61 = add nuw nsw i64 %60, %49
  %62 = getelementptr inbounds nuw half, ptr %59, i64 %61
  %63 = load half, ptr %62, align 2
  %64 = fpext half %63 to float
  %65 = extractvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %28, 1
  %66 = mul nuw nsw i64 %52, 1024
  %67 = add nuw nsw i64 %66, %51
  %68 = getelementptr inbounds nuw i64, ptr %65, i64 %67
  %69 = load i64, ptr %68, align 4
  %70 = call i64 @llvm.smax.i64(i64 %69, i64 0)
  %71 = call i64 @llvm.smin.i64(i64 %70, i64 50256)
  %72 = extractvalue { ptr, ptr, i64, [2 x i64], [2 x i64] } %21, 1
  %73 = mul nuw nsw i64 %71, 768
  %74 = add nuw nsw i64 %73, %49
  %75 = getelementptr inbounds nuw half, ptr %72, i64 %74
  %76 = load half, ptr %75, align 2
  %77 = fpext half %76 to float
  %78 = fadd float %77, %64
  %79 = fptrunc float %78 to half
  %80 = extractvalue { ptr, ptr, i64, [3 x i64], [3 x i64] } %14, 1
  %81 = mul nuw nsw i64 %52, 786432
  %82 = mul nuw nsw i64 %51, 768
  %83 = add nuw nsw i64 %81, %82
  %84 = add nuw nsw i64 %83, %49
  %85 = getelementptr inbounds nuw half, ptr %80, i64 %84
  store half %79, ptr %85, align 2
  ret void
}

; Function Attrs: nocallback nofree nosync nounwind speculatable willreturn memory(none)
declare noundef range(i32 0, 2147483647) i32 @llvm.nvvm.read.ptx.sreg.ctaid.x() #1

; Function Attrs: nocallback nofree nosync nounwind speculatable willreturn memory(none)
declare noundef range(i32 0, 1024) i32 @llvm.nvvm.read.ptx.sreg.tid.x() #1

; Function Attrs: nocallback nocreateundeforpoison nofree nosync nounwind speculatable willreturn memory(none)
declare i64 @llvm.smax.i64(i64, i64) #2

; Function Attrs: nocallback nocreateundeforpoison nofree nosync nounwind speculatable willreturn memory(none)
declare i64 @llvm.smin.i64(i64, i64) #2

attributes #0 = { "nvvm.maxntid"="256,1,1" }
attributes #1 = { nocallback nofree nosync nounwind speculatable willreturn memory(none) }
attributes #2 = { nocallback nocreateundeforpoison nofree nosync nounwind speculatable willreturn memory(none) }

!llvm.module.flags = !{!0}

!0 = !{i32 2, !"Debug Info Version", i32 3}
